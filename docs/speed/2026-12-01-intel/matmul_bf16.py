"""bf16 against fp32 matmuls alone on this CPU (the README's "3-6x" with AMX): F.linear at Vim-T's and the demo's
shapes, fp32, bf16 tensors, and fp32 tensors under bf16 autocast; best of 5 x 50 calls, 1 thread.

    python docs/speed/2026-12-01-intel/matmul_bf16.py > matmul_bf16.txt
"""
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(1)


def per_call_us(f, n=50):
    f(), f()
    best = 1e9
    for _ in range(5):
        s = time.perf_counter()
        for _ in range(n):
            f()
        best = min(best, (time.perf_counter() - s) / n)
    return best * 1e6


for m, k, n in [(197, 192, 768), (197 * 8, 192, 768), (6400, 64, 256), (6400, 128, 64), (197, 384, 192)]:
    a, w = torch.randn(m, k), torch.randn(n, k)
    ab, wb = a.bfloat16(), w.bfloat16()
    f32 = per_call_us(lambda: F.linear(a, w))
    b16 = per_call_us(lambda: F.linear(ab, wb))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = per_call_us(lambda: F.linear(a, w))
    print(f"M {m} K {k} N {n}: fp32 {f32:.0f} us, bf16 {b16:.0f} us ({f32 / b16:.1f}x), autocast {auto:.0f} us "
          f"({f32 / auto:.1f}x)")
