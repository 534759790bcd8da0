"""One pruning stage of the canvas demo DyVM at inference (`dyvm_scan::prune_stage`: the predictor, the top-k and
the rebuilt sequence) and its predictor alone (`dyvm_scan::predictor_forward`), at batch 1, 8 and 64 on random
hidden states, 2 threads (medians of 7 rounds of 50 calls, µs). Run it against another build by putting that
checkout's src first: `PYTHONPATH=<checkout>/src python stage_time.py DYVM_CKPT`.
"""
import statistics
import sys
import time

import torch

from dyvm.demo import _test_loader
from dyvm.evaluate import load_for_eval
from dyvm.kernels import mix_cpp
from dyvm.utils import retain_freed_memory

retain_freed_memory()
torch.set_num_threads(2)
student = load_for_eval(sys.argv[1]).eval()
images = next(iter(_test_loader(student, None, 64, batch_size=64)))[0]
predictor = student.score_predictors[0]
params, eps, keep = predictor.fused_params(), predictor.in_conv[0].eps, student.keep_counts()[0]
row = []
with torch.inference_mode():
    for batch in (1, 8, 64):
        seq = student.embed_sequence(images[:batch])
        hidden, residual = torch.randn_like(seq.hidden), torch.randn_like(seq.hidden)
        before = seq.layout.shared_positions(seq.num_patches)
        after = seq.layout.shared_positions(keep)
        calls = {"stage": lambda: mix_cpp.prune_stage(hidden, residual, seq.patch_ids, params, eps, keep, before, after),
                 "predictor": lambda: mix_cpp.predictor_forward(hidden, params, eps)}
        for name, call in calls.items():
            for _ in range(5):
                call()
            times = []
            for _ in range(7):
                start = time.perf_counter()
                for _ in range(50):
                    call()
                times.append((time.perf_counter() - start) / 50 * 1e6)
            row.append(f"b{batch} {name} {statistics.median(times):.0f} us")
print(", ".join(row))
