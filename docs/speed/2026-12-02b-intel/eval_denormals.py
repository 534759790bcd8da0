"""Does flushing denormals change inference speed? The demo's trained DyVM (its best.pth) on the first 64 test
images, batch 1 (16 images one by one) and batch 64, flushed vs not, 9 interleaved rounds, 2 threads.

    python eval_denormals.py CHECKPOINT
"""
import sys, torch, statistics, time
from dyvm.utils import retain_freed_memory; retain_freed_memory()
from dyvm.evaluate import load_for_eval
from dyvm.kernels import scan_cpp
from dyvm.data import build_dataset
torch.set_num_threads(2)
m = load_for_eval(sys.argv[1], None, {}).eval()
ds = build_dataset("fashion-mnist", "test", None, channels=1)
import torchvision.transforms as T
x = torch.stack([T.functional.normalize(T.functional.to_tensor(ds[i][0]), (0.2860,), (0.3530,)) for i in range(64)])
def run(b):
    with torch.no_grad():
        if b == 64: m(x)
        else:
            for i in range(16): m(x[i:i + 1])
res = {1: [], 64: []}
for r in range(9):
    for b in (1, 64):
        ts = {}
        for flush in ((True, False) if r % 2 else (False, True)):
            scan_cpp.set_flush_denormal(flush); run(b)
            t0 = time.perf_counter(); run(b); run(b); ts[flush] = time.perf_counter() - t0
        scan_cpp.set_flush_denormal(False)
        res[b].append(ts[False] / ts[True])
for b in (1, 64): print("batch", b, "unflushed/flushed", round(statistics.median(res[b]), 3), [round(v, 3) for v in sorted(res[b])])
