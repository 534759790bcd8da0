"""Two trained DyVMs and their teacher on the same 64 Fashion-MNIST test images, batch 1 (one image per call,
the routers decide per image) and batch 64, in interleaved rounds (the three models' order rotates each round).
  python two_dyvms_latency.py TEACHER.pth DYVM_A.pth DYVM_B.pth [THREADS] [ROUNDS]
Prints each DyVM's median per-round time ratio to the teacher, with its IQR, and B / A."""
import statistics
import sys
import time

import torch

from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import _test_loader
from dyvm.utils import retain_freed_memory

retain_freed_memory()
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 15
torch.set_num_threads(threads)
models = {name: model_from_checkpoint(path)[0].eval() for name, path in zip(("teacher", "A", "B"), sys.argv[1:4])}
images = next(iter(_test_loader(models["teacher"], None, 64, batch_size=64)))[0]
names = list(models)


def quartiles(values):
    q = statistics.quantiles(sorted(values), n=4)
    return f"{statistics.median(values):.3f} (IQR {q[0]:.3f}-{q[2]:.3f})"


with torch.no_grad():
    for batch in (1, 64):
        calls = [images[i:i + batch] for i in range(0, 64, batch)]
        times = {n: [] for n in names}
        for m in models.values():
            for x in calls[:8]:
                m(x)
        for r in range(rounds):
            for name in names[r % 3:] + names[:r % 3]:
                t0 = time.perf_counter()
                for x in calls:
                    models[name](x)
                times[name].append((time.perf_counter() - t0) / len(calls) * 1e3)
        ratio = {n: [t / u for t, u in zip(times[n], times["teacher"])] for n in ("A", "B")}
        print(f"batch {batch}: teacher {statistics.median(times['teacher']):.3f} ms; DyVM A / teacher "
              f"{quartiles(ratio['A'])}; DyVM B / teacher {quartiles(ratio['B'])}; B / A "
              f"{quartiles([b / a for a, b in zip(times['A'], times['B'])])}")
