# The same shapes in bf16 (what autocast runs in_proj / out_proj in), and the casts of in_proj's output, 2 threads
import torch, time
torch.set_num_threads(2)
def bench(M,K,N, tA=False, tB=False, reps=50, dt=torch.bfloat16):
    a = (torch.randn(K,M).t() if tA else torch.randn(M,K)).to(dt)
    b = (torch.randn(N,K).t() if tB else torch.randn(K,N)).to(dt)
    for _ in range(5): torch.mm(a,b)
    t=time.perf_counter()
    for _ in range(reps): torch.mm(a,b)
    d=(time.perf_counter()-t)/reps
    return d*1e3, 2*M*K*N/d/1e9
for name,(M,K,N,tA,tB) in {"big":(2048,2048,2048,0,0),"in_fwd":(6400,64,256,0,1),"in_dX":(6400,256,64,0,0),"in_dW":(256,6400,64,1,0),
  "out_fwd":(6400,128,64,0,1),"out_dX":(6400,64,128,0,0),"out_dW":(64,6400,128,1,0)}.items():
    ms,g = bench(M,K,N,tA,tB, 5 if name=="big" else 50)
    print(f"{name:8s} {ms:7.3f} ms {g:6.1f} GFLOP/s")
x=torch.randn(6400,256); 
t=time.perf_counter()
for _ in range(50): x.to(torch.bfloat16)
print("cast 6400x256 f32->bf16 ms", (time.perf_counter()-t)/50*1e3)
y=x.to(torch.bfloat16)
t=time.perf_counter()
for _ in range(50): y.float()
print("cast 6400x256 bf16->f32 ms", (time.perf_counter()-t)/50*1e3)
