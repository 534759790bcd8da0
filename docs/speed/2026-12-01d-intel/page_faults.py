"""Minor page faults, kernel time and wall time per forward of a model, in a fresh process (2 torch threads).

Usage: python page_faults.py MODEL BATCH FORWARDS [retain]
MODEL: vim_tiny or dyvm_vim_tiny (random weights, 80% of branches on); ``retain``: call
dyvm.utils.retain_freed_memory() first (what the dyvm command does). Run from the repository root.
"""
import resource
import sys
import time

import torch

from dyvm.bench import build_model

torch.set_num_threads(2)
if len(sys.argv) > 4:
    from dyvm.utils import retain_freed_memory
    print("applied", retain_freed_memory())
name, batch, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kw = dict(routers_on=0.8) if name.startswith("dyvm") else {}
model = build_model(name, torch.device("cpu"), **kw).eval()
x = torch.randn(batch, 3, 224, 224)
with torch.no_grad():
    for _ in range(3):
        model(x)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    for _ in range(n):
        model(x)
    dt = (time.perf_counter() - t) / n
    r1 = resource.getrusage(resource.RUSAGE_SELF)
print("maxrss MB", r1.ru_maxrss // 1024)
print(name, batch, "minor faults per forward", (r1.ru_minflt - r0.ru_minflt) / n, f"{dt * 1e3:.1f} ms",
      "sys per forward", f"{(r1.ru_stime - r0.ru_stime) / n * 1e3:.2f} ms")
