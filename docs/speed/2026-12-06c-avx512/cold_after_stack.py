"""Small calls right after the stacked extension call against the same calls in a warm loop (session 46): the
shipped canvas teacher's stack (`VisionMamba.fused_stack`) on a batch of 8, then one probe, timed alone; medians of
20 probes a round, 5 rounds (µs). The stack's weights and activations push the interpreter's and the dispatcher's
code and data out of the caches.

Usage: python docs/speed/2026-12-06c-avx512/cold_after_stack.py [--threads 2]
"""
import argparse
import statistics
import time

import torch

from dyvm.demo import _test_loader, shipped_teacher
from dyvm.evaluate import load_for_eval

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
model = load_for_eval(shipped_teacher()[0]).eval()
x = next(iter(_test_loader(model, None, 8, batch_size=8)))[0].contiguous()
y = torch.randn(8, 101, 64)
probes = {"a Python loop (100 adds)": lambda: sum(range(100)), "torch.empty(10)": lambda: torch.empty(10),
          "x.sum() (8 images)": lambda: x.sum(), "y + 1 (52k values)": lambda: y + 1,
          "model.check_input(x)": lambda: model.check_input(x)}
times: dict = {}
with torch.inference_mode():
    seq = model.embed_sequence(x)
    for _ in range(5):
        for name, probe in probes.items():
            for label, before in (("after the stack", lambda: model.fused_stack(seq.hidden, seq.patch_ids, [[]])),
                                  ("warm (after itself)", probe)):
                samples = []
                for _ in range(20):
                    before()
                    start = time.perf_counter()
                    probe()
                    samples.append(time.perf_counter() - start)
                times.setdefault((name, label), []).append(statistics.median(samples) * 1e6)
print(f"{args.threads} thread(s), batch 8: median µs")
print("| probe | warm | right after the stack |")
print("|---|---|---|")
for name in probes:
    print(f"| {name} | {statistics.median(times[(name, 'warm (after itself)')]):.1f} | "
          f"{statistics.median(times[(name, 'after the stack')]):.1f} |")
