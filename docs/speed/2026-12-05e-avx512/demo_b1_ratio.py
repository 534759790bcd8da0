"""The demo DyVM against its teacher at batch 1 in one process: 15 interleaved rounds of 64 single-image calls each.
python demo_b1_ratio.py THREADS DYVM_CHECKPOINT   (the teacher is the shipped asset)"""
import statistics
import sys
import time

import torch

from dyvm.evaluate import load_for_eval
from dyvm.utils import retain_freed_memory

retain_freed_memory()
torch.set_num_threads(int(sys.argv[1]))
teacher = load_for_eval("src/dyvm/assets/fashion_mnist_vim_teacher.pth").eval()
student = load_for_eval(sys.argv[2]).eval()
x = torch.randn(64, 1, 28, 28)


def run(model):
    with torch.inference_mode():
        for i in range(64):
            model(x[i:i + 1])


run(teacher), run(student)
ts, ds, rs = [], [], []
for _ in range(15):
    t0 = time.perf_counter(); run(teacher); a = (time.perf_counter() - t0) / 64
    t0 = time.perf_counter(); run(student); b = (time.perf_counter() - t0) / 64
    ts.append(a); ds.append(b); rs.append(b / a)
q = sorted(rs)
print(f"threads {sys.argv[1]}: teacher {statistics.median(ts) * 1e3:.3f} ms, DyVM {statistics.median(ds) * 1e3:.3f} ms, "
      f"DyVM/teacher {statistics.median(rs):.3f} (IQR {q[3]:.3f}-{q[11]:.3f})")
