import sys, time, torch
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import shipped_teacher
from dyvm.utils import retain_freed_memory
retain_freed_memory()
which, n = sys.argv[1], int(sys.argv[2])
path = shipped_teacher()[0] if which == "teacher" else "/work/runs/demo-s26-avx2/checkpoints/dyvm/best.pth"
m, _ = model_from_checkpoint(path)
m.eval()
from dyvm.demo import _test_loader
x = next(iter(_test_loader(m, None, 64)))[0][:64]  # the first 64 real test images
with torch.no_grad():
    for _ in range(3): m(x)
    t = time.perf_counter()
    for _ in range(n): m(x)
    print(which, "ms", (time.perf_counter() - t) / n * 1e3)
