# Weight-gradient products (grad^T x, the rows M = 6400 of the demo's Vim step) split across the threads, each part on one
# thread, against MKL's own 2-thread product; and row-split forward / input-gradient products for comparison. Caches
# flushed before each call (as inside a step). `python mm_rows_split.py` (builds a small extension with load_inline).
import statistics
import tempfile
import time

import torch
from torch.utils.cpp_extension import load_inline
src = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
// dW = g^T x with the rows (K) split across the threads, partials summed
at::Tensor mm_tn_ksplit(const at::Tensor& g, const at::Tensor& x) {
  const int64_t K = g.size(0), M = g.size(1), N = x.size(1);
  const int64_t T = at::get_num_threads();
  at::Tensor part = at::empty({T, M, N}, g.options());
  at::parallel_for(0, T, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t k0 = c * K / T, k1 = (c + 1) * K / T;
      at::Tensor o = part[c];
      at::mm_out(o, g.slice(0, k0, k1).t(), x.slice(0, k0, k1));
    }
  });
  float* p = part.data_ptr<float>();
  const int64_t n = M * N;
  for (int64_t c = 1; c < T; ++c) for (int64_t i = 0; i < n; ++i) p[i] += p[c * n + i];
  return part[0];
}
// out = a w^T with the rows (M) split across the threads
at::Tensor mm_nt_msplit(const at::Tensor& a, const at::Tensor& w) {
  const int64_t M = a.size(0);
  at::Tensor out = at::empty({M, w.size(0)}, a.options());
  const int64_t T = at::get_num_threads();
  at::parallel_for(0, T, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t m0 = c * M / T, m1 = (c + 1) * M / T;
      at::Tensor o = out.slice(0, m0, m1);
      at::mm_out(o, a.slice(0, m0, m1), w.t());
    }
  });
  return out;
}
"""
m = load_inline("ksplit_x", cpp_sources=src, functions=["mm_tn_ksplit", "mm_nt_msplit"], extra_cflags=["-O2", "-fopenmp"],
                build_directory=tempfile.mkdtemp(), verbose=False)
torch.set_num_threads(2)
flush = torch.empty(64 << 20 >> 2)
res = {}


def time_arms(name, arms):
    """Each arm's median call time over 20 calls, caches flushed before each, into res[(name, arm)]."""
    for arm, f in arms.items():
        for _ in range(3):
            f()
        ts = []
        for _ in range(20):
            flush.add_(1.0)
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        res.setdefault((name, arm), []).append(statistics.median(ts) * 1e3)


for rnd in range(6):
    for name, (K, M, N) in {"in_dW": (6400, 256, 64), "out_dW": (6400, 64, 128), "xp_dW": (6400, 36, 128)}.items():
        g = torch.randn(K, M); x = torch.randn(K, N)
        ref = torch.mm(g.t(), x); got = m.mm_tn_ksplit(g, x)
        assert torch.allclose(ref, got, rtol=1e-4, atol=1e-2), (ref - got).abs().max()
        time_arms(name, {"mkl": lambda: torch.mm(g.t(), x), "ksplit": lambda: m.mm_tn_ksplit(g, x)})
    for name, (M, K, N) in {"in_fwd": (6400, 64, 256), "out_fwd": (6400, 128, 64), "xp_fwd": (6400, 128, 36),
                            "in_dX": (6400, 256, 64), "out_dX": (6400, 64, 128)}.items():
        a = torch.randn(M, K); w = torch.randn(N, K)
        time_arms(name, {"mkl": lambda: torch.mm(a, w.t()), "msplit": lambda: m.mm_nt_msplit(a, w)})
names = sorted({k[0] for k in res})
for n in names:
    arms = [k for k in res if k[0] == n]
    print(n, "  ".join(f"{a}: {statistics.median(res[(n, a)]):.3f}" for _, a in arms))
