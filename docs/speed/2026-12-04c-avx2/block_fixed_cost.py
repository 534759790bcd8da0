# Session 26 record (2026-12-04, AVX2 kind): see measured.txt for the commands and outputs.
import torch, time, sys
import pathlib, dyvm
TEACHER = str(pathlib.Path(dyvm.__file__).parent / "assets" / "fashion_mnist_vim_teacher.pth")  # the shipped teacher
from dyvm.evaluate import load_for_eval
from dyvm.kernels import mix_cpp
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
t = load_for_eval(TEACHER); t = t[0] if isinstance(t, tuple) else t
t.eval()
layer = t.layers[3]; P = layer.fused_params()
nw, inw, fw, bw, ow = P[0], P[1], P[2:9], P[9:16], P[16]
eps = layer.norm.eps
def tm(f, n=2000):
    for _ in range(100): f()
    best = 1e9
    for _ in range(7):
        a = time.perf_counter()
        for _ in range(n): f()
        best = min(best, (time.perf_counter() - a) / n * 1e6)
    return best
with torch.inference_mode():
    for L in (2, 5, 15, 50):
        h = torch.randn(1, L, 64); r = torch.randn(1, L, 64)
        full = tm(lambda: mix_cpp.block_forward(h, r, nw, eps, inw, fw, bw, ow, 0.5))
        mix_cpp.STUB_SCAN[0] = True
        stub = tm(lambda: mix_cpp.block_forward(h, r, nw, eps, inw, fw, bw, ow, 0.5))
        mix_cpp.STUB_SCAN[0] = False
        g = torch.tensor([[1., 0.]])
        half = tm(lambda: mix_cpp.block_forward(h, r, nw, eps, inw, fw, bw, ow, 0.5, gates=g))
        print("L %3d  block %.1f us  scan stubbed %.1f us  one branch %.1f us" % (L, full, stub, half))
