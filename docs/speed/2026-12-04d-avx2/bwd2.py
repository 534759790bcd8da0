import time, torch, sys
torch.set_num_threads(2)
from dyvm.kernels import scan_cpp
m = scan_cpp._load()
B, E, L, N = 128, 128, 50, 16
torch.manual_seed(0)
def cl(t): return t.transpose(1, 2).contiguous().transpose(1, 2)
u = cl(torch.randn(B, E, L)); d = cl(torch.randn(B, E, L) * 0.5); z = cl(torch.randn(B, E, L)); g = cl(torch.randn(B, E, L))
A = -torch.rand(E, N) * 2; Bm = torch.randn(B, L, N); Cm = torch.randn(B, L, N); D = torch.randn(E); bias = torch.randn(E)
f = (lambda: m.backward(g, u, d, A, Bm, Cm, D, z, bias, True, False, True)) if sys.argv[1] == "bwd" else (lambda: m.forward(u, d, A, Bm, Cm, D, z, bias, True, False, True))
f()
ts = []
t_end = time.time() + float(sys.argv[2])
while time.time() < t_end:
    t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
ts.sort(); q = lambda p: ts[int(p * (len(ts) - 1))] * 1e3; print(sys.argv[1], "calls", len(ts), "p10 %.2f p25 %.2f p50 %.2f p75 %.2f p90 %.2f" % (q(.1), q(.25), q(.5), q(.75), q(.9)))
