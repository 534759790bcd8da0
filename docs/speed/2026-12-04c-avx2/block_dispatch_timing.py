# Session 26 record (2026-12-04, AVX2 kind): see measured.txt for the commands and outputs.
import torch, time, statistics as st
import pathlib, dyvm
TEACHER = str(pathlib.Path(dyvm.__file__).parent / "assets" / "fashion_mnist_vim_teacher.pth")  # the shipped teacher
from dyvm.evaluate import load_for_eval
from dyvm.kernels import mix_cpp
torch.set_num_threads(1)
t = load_for_eval(TEACHER); t = t[0] if isinstance(t, tuple) else t
t.eval()
layer = t.layers[3]; P = layer.fused_params()
nw, inw, fw, bw, ow = P[0], P[1], P[2:9], P[9:16], P[16]
h = torch.randn(1, 2, 64); r = torch.randn(1, 2, 64)
f = lambda: mix_cpp.block_forward(h, r, nw, layer.norm.eps, inw, fw, bw, ow, 0.5)
def tm(ctx, n=2000):
    with ctx():
        a = time.perf_counter()
        for _ in range(n): f()
        return (time.perf_counter() - a) / n * 1e6
for ctx in (torch.no_grad, torch.inference_mode): tm(ctx, 300)
ng, im = [], []
for _ in range(15): ng.append(tm(torch.no_grad)); im.append(tm(torch.inference_mode))
r = [a / b for a, b in zip(ng, im)]
print("block at L 2: no_grad %.1f us, inference_mode %.1f us, ratio %.3f (IQR %.3f-%.3f)" % (st.median(ng), st.median(im), st.median(r), *st.quantiles(r, n=4)[::2]))
