"""The demo teacher at batch 1 in parts (median µs of 400 warm calls each): the whole forward, the extension's
stack_forward op alone, and the Python around it; then a torch.profiler table. Usage, from a checkout's root:
PYTHONPATH=src python docs/speed/2026-12-05b-avx512/teacher_parts.py"""
import time, torch
from dyvm.evaluate import load_for_eval
from dyvm.kernels import mix_cpp
torch.set_num_threads(2)
r=load_for_eval('src/dyvm/assets/fashion_mnist_vim_teacher.pth',None)
m=(r[0] if isinstance(r,tuple) else r).eval()
x=torch.randn(1,1,28,28)
def med(f,n=400):
    for _ in range(50): f()
    ts=[]
    for _ in range(n):
        t=time.perf_counter_ns(); f(); ts.append(time.perf_counter_ns()-t)
    return sorted(ts)[n//2]/1e3
real=mix_cpp.stack_forward; cap={}
def spy(*a):
    cap['a']=a; return real(*a)
mix_cpp.stack_forward=spy
with torch.inference_mode():
    m(x)
    a=cap['a']
    mix_cpp.stack_forward=real
    print('forward', med(lambda: m(x)))
    print('stack_forward op', med(lambda: real(*a)))
    print('check_input', med(lambda: m.check_input(x)))
    print('patch_embed', med(lambda: m.patch_embed(x)))
    p=m.patch_embed(x)
    print('embed_tokens', med(lambda: m.embed_tokens(p)))
    seq=m.embed_tokens(p)
    print('fused_stack', med(lambda: m.fused_stack(seq.hidden, seq.patch_ids, [[]])))
    st=real(*a)
    print('final_norm', med(lambda: m.final_norm(st[0],st[1])))
    f=m.final_norm(st[0],st[1]); seq.hidden=f
    print('prefix+head', med(lambda: m.forward_head(seq.prefix())))
from torch.profiler import profile
with torch.inference_mode(), profile() as prof:
    for _ in range(50): m(x)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
