"""Time of one C++ forward scan call at batch 64, 128 channels, N 16, for sequence lengths 2, 5, 15, 50 (median of
9 x 20 calls, 1 thread). The README's short-row numbers come from running this four times with the kernel source
swapped between runs (973853d's padded-row forward, then df579f3's, twice; each source builds its own cached
extension), nothing else running:

    python docs/speed/2026-12-01-intel/scan_rows.py
"""
import time

import torch

from dyvm.kernels import scan_cpp

torch.set_num_threads(1)
assert scan_cpp.available(), scan_cpp.build_error()
B, E, N = 64, 128, 16
for L in (2, 5, 15, 50):
    xz = torch.randn(B, L, 2 * E)
    u, z = xz[..., :E].transpose(1, 2), xz[..., E:].transpose(1, 2)
    delta = (torch.randn(B, L, E) * 0.5).transpose(1, 2)
    A = -torch.rand(E, N) * 4
    Bm, Cm, D, bias = torch.randn(B, N, L), torch.randn(B, N, L), torch.randn(E), torch.randn(E) * 0.1
    f = lambda: scan_cpp.selective_scan_cpp(u, delta, A, Bm, Cm, D, z, bias, True, False)  # noqa: E731
    for _ in range(5):
        f()
    times = []
    for _ in range(9):
        t = time.perf_counter()
        for _ in range(20):
            f()
        times.append((time.perf_counter() - t) / 20)
    m = sorted(times)[4]
    print(f"L={L}: {m * 1e3:.3f} ms per call, {m / (B * E) * 1e9:.0f} ns per row, {m / (B * E * L) * 1e9:.1f} ns per step")
