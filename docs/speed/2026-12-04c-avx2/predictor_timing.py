# Session 26 record (2026-12-04, AVX2 kind): see measured.txt for the commands and outputs.
import torch, time, sys
from dyvm.kernels import scan_cpp
assert scan_cpp.available()
torch.set_num_threads(1)
torch.manual_seed(0)
D = 64
shapes = [(D,), (D,), (D, D), (D,), (D // 2, D), (D // 2,), (D // 4, D // 2), (D // 4,), (2, D // 4), (2,)]
p = [torch.randn(s) * 0.2 for s in shapes]
res = {}
for N in (49, 33, 22):
    x = torch.randn(1, N, D)
    for _ in range(200): torch.ops.dyvm_scan.predictor_forward(x, p, 1e-5)
    best = 1e9
    for r in range(7):
        a = time.perf_counter()
        for _ in range(2000): out = torch.ops.dyvm_scan.predictor_forward(x, p, 1e-5)
        best = min(best, (time.perf_counter() - a) / 2000 * 1e6)
    res[N] = out
    print(N, "%.1f us" % best)
torch.save(res, sys.argv[1])
