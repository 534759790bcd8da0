# The demo Vim step's matmul shapes (batch 128 x 50 tokens = 6400 rows, D 64, E 128; in_proj, out_proj, x_proj forward
# and backward) against a 2048^2 product, 2 threads. `python mm_shapes.py` in float32; `python mm_shapes.py bf16` in
# bf16 (what autocast runs in_proj / out_proj in; x_proj stays float32 there), plus the casts of in_proj's output.
import sys
import time

import torch

torch.set_num_threads(2)
dtype = torch.bfloat16 if sys.argv[1:] == ["bf16"] else torch.float32


def bench(M, K, N, tA=False, tB=False, reps=50):
    a = (torch.randn(K, M).t() if tA else torch.randn(M, K)).to(dtype)
    b = (torch.randn(N, K).t() if tB else torch.randn(K, N)).to(dtype)
    for _ in range(5):
        torch.mm(a, b)
    t = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    dt = (time.perf_counter() - t) / reps
    return dt * 1e3, 2 * M * K * N / dt / 1e9


shapes = {"big": (2048, 2048, 2048, 0, 0), "in_fwd": (6400, 64, 256, 0, 1), "in_dX": (6400, 256, 64, 0, 0),
          "in_dW": (256, 6400, 64, 1, 0), "out_fwd": (6400, 128, 64, 0, 1), "out_dX": (6400, 64, 128, 0, 0),
          "out_dW": (64, 6400, 128, 1, 0)}
if dtype == torch.float32:
    shapes.update(xp_fwd=(6400, 128, 36, 0, 1), xp_dW=(36, 6400, 128, 1, 0))
for name, (M, K, N, tA, tB) in shapes.items():
    ms, g = bench(M, K, N, tA, tB, 5 if name == "big" else 50)
    print(f"{name:8s} {ms:7.3f} ms {g:6.1f} GFLOP/s")
if dtype == torch.bfloat16:
    x = torch.randn(6400, 256)
    y = x.to(torch.bfloat16)
    for label, fn in (("f32->bf16", lambda: x.to(torch.bfloat16)), ("bf16->f32", lambda: y.float())):
        t = time.perf_counter()
        for _ in range(50):
            fn()
        print(f"cast 6400x256 {label} ms", (time.perf_counter() - t) / 50 * 1e3)
