import torch, time, sys
from dyvm.kernels import scan_cpp
scan_cpp.available()
torch.set_num_threads(int(sys.argv[1]))
B,E,L,N=1,384,197,16
def cl(*s): return torch.randn(B,L,E).transpose(1,2)
u=cl(); d=cl(); z=cl()
A=-torch.rand(E,N)-0.5; Bm=torch.randn(B,L,N); Cm=torch.randn(B,L,N); D=torch.randn(E); bias=torch.randn(E)*0.1
f=lambda rev: torch.ops.dyvm_scan.forward(u,d,A,Bm,Cm,D,z,bias,True,rev,True)
xc=torch.randn(B,L,E).transpose(1,2); w=torch.randn(E,4); cb=torch.randn(E)
g=lambda rev: torch.ops.dyvm_scan.conv_forward(xc,w,cb,True,None,rev,True)
for name,fn in [('scan',f),('conv',g)]:
    for _ in range(20): fn(False)
    t=time.perf_counter()
    for _ in range(200): fn(False); fn(True)
    print(name, 'per layer (2 dirs) us %.0f'%((time.perf_counter()-t)/200*1e6), '×24 ms %.1f'%((time.perf_counter()-t)/200*24*1e3))
