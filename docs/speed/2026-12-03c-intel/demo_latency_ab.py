"""DyVM / teacher latency of the demo's models, batch 1 and 64, in interleaved rounds (one process, this build).
Run once per build (PYTHONPATH=<build>/src) and compare the medians of the per-round ratios:
  python demo_latency_ab.py TEACHER.pth DYVM.pth [THREADS] [ROUNDS]"""
import statistics
import sys
import time

import torch

from dyvm.checkpoint import model_from_checkpoint
from dyvm.utils import retain_freed_memory

retain_freed_memory()
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 15
torch.set_num_threads(threads)
models = {"teacher": model_from_checkpoint(sys.argv[1])[0].eval(), "dyvm": model_from_checkpoint(sys.argv[2])[0].eval()}
torch.manual_seed(0)
for batch, reps in ((1, 100), (64, 5)):
    x = torch.randn(batch, 1, 28, 28)
    times = {n: [] for n in models}
    with torch.no_grad():
        for m in models.values():
            for _ in range(max(3, reps // 5)):
                m(x)
        for r in range(rounds):
            for name in (("teacher", "dyvm") if r % 2 == 0 else ("dyvm", "teacher")):
                t0 = time.perf_counter()
                for _ in range(reps):
                    models[name](x)
                times[name].append((time.perf_counter() - t0) / reps * 1e3)
    ratios = sorted(d / t for d, t in zip(times["dyvm"], times["teacher"]))
    q = statistics.quantiles(ratios, n=4)
    print(f"batch {batch}: teacher {statistics.median(times['teacher']):.3f} ms, DyVM {statistics.median(times['dyvm']):.3f} ms, "
          f"DyVM/teacher median of {rounds} per-round ratios {statistics.median(ratios):.3f} (IQR {q[0]:.3f}-{q[2]:.3f})")
