# One selective-scan call at Vim-T batch 1 (B 1, E 384, L 197, N 16, channel-last), 1 thread, with and without
# softplus and the z gate; median of 9 rounds of 30 calls. Run with PYTHONPATH=<checkout>/src to time a build.
import torch, time
from dyvm.kernels import scan_cpp
torch.set_num_threads(1)
assert scan_cpp.available()
B,E,L,N=1,384,197,16
x = torch.randn(B,L,E); u = x.transpose(1,2)
delta = torch.randn(B,L,E).transpose(1,2)*0.5
z = torch.randn(B,L,E).transpose(1,2)
A = -torch.exp(torch.randn(E,N)*0.5)
Bm = torch.randn(B,N,L); Cm = torch.randn(B,N,L); D=torch.randn(E); bias=torch.randn(E)
cases = {"full": lambda: scan_cpp.selective_scan_cpp(u,delta,A,Bm,Cm,D,z,bias,True),
         "no softplus": lambda: scan_cpp.selective_scan_cpp(u,delta,A,Bm,Cm,D,z,bias,False),
         "no gate": lambda: scan_cpp.selective_scan_cpp(u,delta,A,Bm,Cm,D,None,bias,True),
         "neither": lambda: scan_cpp.selective_scan_cpp(u,delta,A,Bm,Cm,D,None,bias,False)}
res={k:[] for k in cases}
for f in cases.values():
    for _ in range(20): f()
for r in range(9):
    for k,f in cases.items():
        t=time.perf_counter()
        for _ in range(30): f()
        res[k].append((time.perf_counter()-t)/30)
steps = B*(E//16)*L
for k,v in res.items():
    v.sort(); print(f"{k:12s} {v[4]*1e6:.1f} us; {v[4]/steps*3.65e9:.0f} cycles per block-step")
