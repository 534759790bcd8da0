import time, torch, sys
torch.set_num_threads(1)
from dyvm.kernels import scan_cpp
m = scan_cpp._load()
B, E, L, N = int(sys.argv[2]), 128, 50, 16
torch.manual_seed(0)
def cl(t): return t.transpose(1, 2).contiguous().transpose(1, 2)
u = cl(torch.randn(B, E, L)); d = cl(torch.randn(B, E, L) * 0.5); z = cl(torch.randn(B, E, L)); g = cl(torch.randn(B, E, L))
A = -torch.rand(E, N) * 2; Bm = torch.randn(B, L, N); Cm = torch.randn(B, L, N); D = torch.randn(E); bias = torch.randn(E)
f = (lambda: m.backward(g, u, d, A, Bm, Cm, D, z, bias, True, False, True)) if sys.argv[1] == "bwd" else (lambda: m.forward(u, d, A, Bm, Cm, D, z, bias, True, False, True))
f()
ts = []
t_end = time.time() + float(sys.argv[3])
while time.time() < t_end:
    t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
ts.sort(); print(sys.argv[1], "calls", len(ts), "median ms %.2f min %.2f" % (ts[len(ts)//2]*1e3, ts[0]*1e3))
