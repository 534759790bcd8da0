"""Forward and forward+backward of one C++ scan call at the demo's training shape (batch 128, 128 channels, 50
steps) and Vim-T's batch-1 shape (384 channels, 197 steps); median of 7 rounds, 1 thread. The C++ comment on
keeping the backward's decays cites runs of this script, alternating the default build with the always-recompute
one (separate processes, so only a rough guide; the interleaved model-level figure is train-step-storedecay-vs-ca9df40.json):

    python docs/speed/2026-12-01-intel/scan_store_decay.py
    DYVM_EXT_CFLAGS="-DDYVM_STORE_DECAY_MAX_L=0" python docs/speed/2026-12-01-intel/scan_store_decay.py
"""
import time

import torch

from dyvm.kernels import scan_cpp

torch.set_num_threads(1)
assert scan_cpp.available(), scan_cpp.build_error()


def bench(B, E, L, N=16, rounds=7):
    xz = torch.randn(B, L, 2 * E)
    u, z = xz[..., :E].transpose(1, 2), xz[..., E:].transpose(1, 2)
    delta = (torch.randn(B, L, E) * 0.5).transpose(1, 2)
    A = -torch.rand(E, N) * 4
    Bm, Cm, D, bias = torch.randn(B, N, L), torch.randn(B, N, L), torch.randn(E), torch.randn(E) * 0.1
    uu, dd = u.detach().clone().requires_grad_(), delta.detach().clone().requires_grad_()

    def fwd_bwd():
        y = scan_cpp.selective_scan_cpp(uu, dd, A, Bm, Cm, D, z, bias, True, False)
        y.backward(torch.ones_like(y))

    fwd = lambda: scan_cpp.selective_scan_cpp(u, delta, A, Bm, Cm, D, z, bias, True, False)  # noqa: E731
    for _ in range(3):
        fwd_bwd(), fwd()
    tf, tb = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(10):
            fwd()
        tf.append((time.perf_counter() - t) / 10)
        t = time.perf_counter()
        for _ in range(5):
            fwd_bwd()
        tb.append((time.perf_counter() - t) / 5)
    tf.sort(), tb.sort()
    print(f"B{B} E{E} L{L}: fwd {tf[len(tf) // 2] * 1e3:.2f} ms, fwd+bwd {tb[len(tb) // 2] * 1e3:.2f} ms")


bench(128, 128, 50)
bench(1, 384, 197)
