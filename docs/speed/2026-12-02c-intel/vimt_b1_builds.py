"""Vim-T (224 px, 24 layers) eval forward at batch 1 and 8, 2 threads, in the build found on PYTHONPATH: prints the
median ms of N calls per batch size. Run alternately per build (whole processes), e.g.
  for r in 1 2 3 4 5; do for src in src /tmp/ref_head/src; do PYTHONPATH=$src python vimt_b1_builds.py 40; done; done"""
import statistics
import sys
import time

import torch

import dyvm
from dyvm.utils import retain_freed_memory

retain_freed_memory()
torch.set_num_threads(2)
torch.manual_seed(0)
model = dyvm.create_model("vim_tiny").eval()
n = int(sys.argv[1])
out = [dyvm.__file__.split("/src/")[0]]
with torch.no_grad():
    for b in (1, 8):
        x = torch.randn(b, 3, 224, 224)
        for _ in range(5):
            model(x)
        ts = []
        for _ in range(n if b == 1 else max(5, n // 4)):
            t = time.perf_counter()
            model(x)
            ts.append(time.perf_counter() - t)
        out.append(f"b{b} {statistics.median(ts) * 1e3:.2f} ms")
print("  ".join(out))
