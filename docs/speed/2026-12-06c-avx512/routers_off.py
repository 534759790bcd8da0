"""The canvas demo DyVM with and without its routers (every branch on) against its teacher, interleaved in one
process over the first 64 test images at one batch size (medians of the rounds' time ratios to the teacher).

Usage: python docs/speed/2026-12-06c-avx512/routers_off.py DYVM_CKPT [--batch 8] [--threads 2] [--rounds 9]
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
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--rounds", type=int, default=9)
args = parser.parse_args()
retain_freed_memory()
torch.set_num_threads(args.threads)
teacher = load_for_eval(shipped_teacher()[0]).eval()
routed = load_for_eval(args.dyvm_checkpoint).eval()
unrouted = load_for_eval(args.dyvm_checkpoint).eval()
unrouted.use_routers = False
images = next(iter(_test_loader(teacher, None, 64, batch_size=64)))[0]
batches = [images[i:i + args.batch].contiguous() for i in range(0, 64, args.batch)]
times: dict = {}
with torch.inference_mode():
    for _ in range(args.rounds):
        for name, model in (("teacher", teacher), ("DyVM", routed), ("DyVM, routers off", unrouted)):
            for b in batches[:2]:
                model(b)
            start = time.perf_counter()
            for _ in range(max(1, 128 // 64)):
                for b in batches:
                    model(b)
            times.setdefault(name, []).append(time.perf_counter() - start)
print(f"batch {args.batch}, {args.threads} thread(s), {args.rounds} rounds: time / the teacher's")
for name in ("DyVM", "DyVM, routers off"):
    print(f"{name}: {statistics.median(a / b for a, b in zip(times[name], times['teacher'])):.3f}")
