import time, torch
from dyvm.kernels import scan_cpp
m = scan_cpp._load()
B, E, L, N = 128, 128, 50, 16
torch.manual_seed(0)
def cl(t): return t.transpose(1, 2).contiguous().transpose(1, 2)
u = cl(torch.randn(B, E, L)); d = cl(torch.randn(B, E, L) * 0.5); z = cl(torch.randn(B, E, L)); g = cl(torch.randn(B, E, L))
A = -torch.rand(E, N) * 2; Bm = torch.randn(B, L, N); Cm = torch.randn(B, L, N); D = torch.randn(E); bias = torch.randn(E)
fwd = lambda: m.forward(u, d, A, Bm, Cm, D, z, bias, True, False, True)
bwd = lambda: m.backward(g, u, d, A, Bm, Cm, D, z, bias, True, False, True)
for name, f in (("fwd", fwd), ("bwd", bwd)):
    res = {1: [], 2: []}
    for r in range(15):
        for th in (1, 2):
            torch.set_num_threads(th); f()
            t = time.perf_counter()
            for _ in range(5): f()
            res[th].append((time.perf_counter() - t) / 5)
    rat = sorted(a / b for a, b in zip(res[1], res[2]))
    print(name, "1 thread ms %.2f  2 threads ms %.2f  speedup median %.3f (min %.3f max %.3f)" % (
        sorted(res[1])[7]*1e3, sorted(res[2])[7]*1e3, rat[7], rat[0], rat[-1]))
