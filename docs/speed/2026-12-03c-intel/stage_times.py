"""Time one DyVM pruning stage (torch.ops.dyvm_scan.prune_stage: predictor, top-k, rebuilt sequence) at the demo's
three stage shapes (D 64, L 50 / 15 / 5, batch 1; the trained demo DyVM's predictors) and at DyVM-Vim-T's (D 192,
L 197 / 177 / 159, batch 1), median of 5 runs of N calls, in this build (PYTHONPATH=<build>/src).
  python stage_times.py DEMO_DYVM.pth THREADS"""
import sys
import time

import torch

from dyvm.bench import build_model
from dyvm.checkpoint import model_from_checkpoint
from dyvm.kernels import mix_cpp
from dyvm.utils import retain_freed_memory

retain_freed_memory()
torch.set_num_threads(int(sys.argv[2]))


def median_us(fn, n):
    for _ in range(n // 5):
        fn()
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return sorted(runs)[2]


torch.manual_seed(0)
for name, model, n in (("demo", model_from_checkpoint(sys.argv[1])[0].eval(), 2000),
                       ("dyvm_vim_tiny", build_model("dyvm_vim_tiny", torch.device("cpu")).eval(), 300)):
    counts, dim = model.keep_counts(), model.embed_dim
    patches = model.num_patches
    with torch.no_grad():
        for k, keep in enumerate(counts):
            pred = model.score_predictors[k]
            params, eps = pred.fused_params(), pred.in_conv[0].eps
            hidden, residual = torch.randn(1, patches + 1, dim), torch.randn(1, patches + 1, dim)
            ids = torch.arange(patches)[None]
            us = median_us(lambda: mix_cpp.prune_stage(hidden, residual, ids, params, eps, keep, [patches // 2],
                                                       [keep // 2]), n)
            print(f"{name} stage {k}: {patches} -> {keep} patches, {us:.1f} us")
            patches = keep
