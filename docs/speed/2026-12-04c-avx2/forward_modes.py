# Session 26 record (2026-12-04, AVX2 kind): see measured.txt. Reads the session-24 demo run's DyVM checkpoint under /work/runs.
import sys, torch, time, statistics as st
import pathlib, dyvm
TEACHER = str(pathlib.Path(dyvm.__file__).parent / "assets" / "fashion_mnist_vim_teacher.pth")  # the shipped teacher
from dyvm.evaluate import load_for_eval
torch.set_num_threads(1)
L = lambda p: (lambda m: m[0] if isinstance(m, tuple) else m)(load_for_eval(p)).eval()
t = L(TEACHER); s = L("/work/runs/demo-s24-avx2/checkpoints/dyvm/best.pth")
x = torch.randn(1, 1, 28, 28)
def run(m, ctx, n=300):
    with ctx():
        a = time.perf_counter()
        for _ in range(n): m(x)
        return (time.perf_counter() - a) / n * 1e6
with torch.no_grad():
    for _ in range(30): t(x); s(x)
res = {k: [] for k in ("t ng", "t im", "s ng", "s im")}
for _ in range(9):
    res["t ng"].append(run(t, torch.no_grad)); res["t im"].append(run(t, torch.inference_mode))
    res["s ng"].append(run(s, torch.no_grad)); res["s im"].append(run(s, torch.inference_mode))
print({k: round(st.median(v)) for k, v in res.items()})
