"""The canvas demo models' eval forward as one extension call (`dyvm_scan::forward_logits`) against the same
checkpoints with that call switched off (the embedding, final norm and head in Python around the stacked call),
interleaved in one process over the first 64 test images (medians of the rounds' time ratios).

Usage: python docs/speed/2026-12-06c-avx512/one_call_ab.py DYVM_CKPT [--batch-sizes 1 8 64] [--threads 2] [--rounds 11]
"""
import argparse
import statistics
import time

import torch

from dyvm.demo import _test_loader, shipped_teacher
from dyvm.evaluate import load_for_eval
from dyvm.utils import retain_freed_memory

parser = argparse.ArgumentParser()
parser.add_argument("dyvm_checkpoint")
parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64])
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--rounds", type=int, default=11)
args = parser.parse_args()
retain_freed_memory()
torch.set_num_threads(args.threads)
models = {"teacher": load_for_eval(shipped_teacher()[0]).eval(), "DyVM": load_for_eval(args.dyvm_checkpoint).eval()}
for name in list(models):
    split = load_for_eval(shipped_teacher()[0] if name == "teacher" else args.dyvm_checkpoint).eval()
    split.fused_logits = lambda x: None  # the forward as before: Python around the stacked call
    models[name + ", split"] = split
images = next(iter(_test_loader(models["teacher"], None, 64, batch_size=64)))[0]
with torch.inference_mode():
    for batch in args.batch_sizes:
        batches = [images[i:i + batch].contiguous() for i in range(0, 64, batch)]
        times: dict = {}
        for _ in range(args.rounds):
            for name, model in models.items():
                for b in batches[:2]:
                    model(b)
                start = time.perf_counter()
                for _ in range(max(1, 256 // 64 // max(1, batch // 16))):
                    for b in batches:
                        model(b)
                times.setdefault(name, []).append(time.perf_counter() - start)
        ratio = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))  # noqa: E731
        print(f"batch {batch}: one call / split: teacher {ratio('teacher', 'teacher, split'):.3f}, DyVM "
              f"{ratio('DyVM', 'DyVM, split'):.3f}; DyVM / teacher: one call {ratio('DyVM', 'teacher'):.3f}, split "
              f"{ratio('DyVM, split', 'teacher, split'):.3f}")
