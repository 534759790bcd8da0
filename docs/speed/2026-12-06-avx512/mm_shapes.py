# The demo Vim step's matmul shapes (batch 128 x 50 tokens = 6400 rows, D 64, E 128) against a large product, fp32, 2 threads
import torch, time
torch.set_num_threads(2)
def bench(M,K,N, tA=False, tB=False, reps=50):
    a = torch.randn(K,M).t() if tA else torch.randn(M,K)
    b = torch.randn(N,K).t() if tB else torch.randn(K,N)
    for _ in range(5): torch.mm(a,b)
    t=time.perf_counter()
    for _ in range(reps): torch.mm(a,b)
    dt=(time.perf_counter()-t)/reps
    return dt*1e3, 2*M*K*N/dt/1e9
for name,(M,K,N,tA,tB) in {"big":(2048,2048,2048,0,0),"in_fwd":(6400,64,256,0,1),"in_dX":(6400,256,64,0,0),"in_dW":(256,6400,64,1,0),
  "out_fwd":(6400,128,64,0,1),"out_dX":(6400,64,128,0,0),"out_dW":(64,6400,128,1,0),"xp_fwd":(6400,128,36,0,1),"xp_dW":(36,6400,128,1,0)}.items():
    ms,g = bench(M,K,N,tA,tB, 5 if name=="big" else 50)
    print(f"{name:8s} {ms:7.3f} ms {g:6.1f} GFLOP/s")
