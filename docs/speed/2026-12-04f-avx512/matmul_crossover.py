import torch, time, sys, statistics as st
torch.set_num_threads(int(sys.argv[1]))
def run(f, n):
    t=time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter()-t)/n*1e6
with torch.inference_mode():
  for (K,N) in [(64,256),(128,64),(192,768),(384,192),(384,768),(768,384)]:
    line=[]
    for M in (8,32,64,128,197,400,1600,6400):
        x=torch.randn(M,K); w=torch.randn(N,K); pw=torch.ops.mkldnn._reorder_linear_weight(w, 197)
        a=lambda: torch.mm(x,w.t()); b=lambda: torch.ops.mkldnn._linear_pointwise(x,pw,None,"none",[],"")
        n=max(3,int(3e6/(M*K*N)*50)); n=min(n,2000)
        run(a,n); run(b,n); ra=[];rb=[]
        for r in range(7): ra.append(run(a,n)); rb.append(run(b,n))
        line.append(f"M{M}:{st.median([y/x for x,y in zip(ra,rb)]):.2f}({M*K*N/1e6:.1f}M)")
    print((K,N), ' '.join(line))
