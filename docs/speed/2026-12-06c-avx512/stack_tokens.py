"""The shipped canvas teacher's stacked extension call (every block in one `dyvm_scan::stack_forward` call) on
random hidden states of 101, 57, 30 and 8 tokens at one batch size, interleaved (medians of the rounds, µs), and
the fit time = blocks x (fixed + tokens x per-token) through the 8- and 30-token points.

Usage: python docs/speed/2026-12-06c-avx512/stack_tokens.py [--batch 1] [--threads 2] [--rounds 9]
"""
import argparse
import statistics
import time

import torch

from dyvm.demo import shipped_teacher
from dyvm.evaluate import load_for_eval
from dyvm.utils import retain_freed_memory

parser = argparse.ArgumentParser()
parser.add_argument("--batch", type=int, default=1)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--rounds", type=int, default=9)
args = parser.parse_args()
retain_freed_memory()
torch.set_num_threads(args.threads)
model = load_for_eval(shipped_teacher()[0]).eval()
lengths = (101, 57, 30, 8)
times: dict = {}
calls = max(10, 200 // args.batch)
with torch.inference_mode():
    for _ in range(args.rounds):
        for length in lengths:
            hidden = torch.randn(args.batch, length, model.embed_dim)
            ids = torch.arange(length - 1).expand(args.batch, -1).contiguous()
            for _ in range(3):
                assert model.fused_stack(hidden, ids, [[]]) is not None
            start = time.perf_counter()
            for _ in range(calls):
                model.fused_stack(hidden, ids, [[]])
            times.setdefault(length, []).append((time.perf_counter() - start) / calls * 1e6)
med = {k: statistics.median(v) for k, v in times.items()}
print(f"batch {args.batch}, {args.threads} thread(s), {model.depth} blocks")
for length in lengths:
    ratio = statistics.median(a / b for a, b in zip(times[length], times[101]))
    print(f"{length} tokens: {med[length]:.0f} us ({ratio:.3f} of 101 tokens)")
per_token = (med[30] - med[8]) / 22
print(f"fit through 8 and 30 tokens: {(med[8] - 8 * per_token) / model.depth:.1f} us a block fixed, "
      f"{per_token / model.depth:.2f} us a token a block")
