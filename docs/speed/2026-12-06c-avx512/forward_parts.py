"""The canvas demo models' eager forward split into the stacked extension call (`dyvm_scan::stack_forward`: every
block and stage) and everything around it (embedding, final norm, head, Python), at one batch size, teacher and
DyVM interleaved in one process over the first 64 test images (medians of the rounds, µs per forward).

Usage: python docs/speed/2026-12-06c-avx512/forward_parts.py DYVM_CKPT [--batch 1] [--threads 2] [--rounds 9]
"""
import argparse
import statistics
import time

import torch

from dyvm.demo import _test_loader, shipped_teacher
from dyvm.evaluate import load_for_eval
from dyvm.kernels import mix_cpp
from dyvm.utils import retain_freed_memory

parser = argparse.ArgumentParser()
parser.add_argument("dyvm_checkpoint")
parser.add_argument("--batch", type=int, default=1)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--rounds", type=int, default=9)
args = parser.parse_args()
retain_freed_memory()
torch.set_num_threads(args.threads)
teacher = load_for_eval(shipped_teacher()[0]).eval()
student = load_for_eval(args.dyvm_checkpoint).eval()
images = next(iter(_test_loader(teacher, None, 64, batch_size=64)))[0]
batches = [images[i:i + args.batch].contiguous() for i in range(0, 64, args.batch)]
inside = [0.0]
stack_forward = mix_cpp.stack_forward


def timed_stack(*a, **k):
    start = time.perf_counter()
    out = stack_forward(*a, **k)
    inside[0] += time.perf_counter() - start
    return out


mix_cpp.stack_forward = timed_stack
parts: dict = {}
with torch.inference_mode():
    for _ in range(args.rounds):
        for name, model in (("teacher", teacher), ("dyvm", student)):
            for b in batches:
                model(b)
            inside[0] = 0.0
            start = time.perf_counter()
            repeats = max(1, 256 // (len(batches) * args.batch))
            for _ in range(repeats):
                for b in batches:
                    model(b)
            n = repeats * len(batches)
            parts.setdefault(name, []).append(((time.perf_counter() - start) / n * 1e6, inside[0] / n * 1e6))
print(f"batch {args.batch}, {args.threads} thread(s), {args.rounds} rounds")
for name, rows in parts.items():
    total = statistics.median(t for t, _ in rows)
    stack = statistics.median(s for _, s in rows)
    outside = statistics.median(t - s for t, s in rows)
    print(f"{name}: whole forward {total:.0f} us, the stacked call {stack:.0f} us, around it {outside:.0f} us")
ratio = lambda i: statistics.median(d[i] / t[i] for d, t in zip(parts["dyvm"], parts["teacher"]))  # noqa: E731
print(f"DyVM / teacher: whole forward {ratio(0):.3f}, the stacked call {ratio(1):.3f}")
