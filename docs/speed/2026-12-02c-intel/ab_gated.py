import sys, time, torch, statistics
from torch import nn
import dyvm, dyvm.losses
from dyvm.models import vim as V
from dyvm.kernels import mixer_ops
from dyvm.utils import retain_freed_memory; retain_freed_memory()
from dyvm.engine import make_optimizer
torch.set_num_threads(2)
torch.manual_seed(0)
K=dict(img_size=28, patch_size=4, in_chans=1, depth=8, embed_dim=64, num_classes=10)
x=torch.randn(128,1,28,28); y=torch.randint(0,10,(128,))
teacher=dyvm.create_model("vim_tiny",**K)
model=dyvm.create_model("dyvm_vim_tiny",**K,pruning_loc=[5,6,7],token_keep_ratio=0.3,block_keep_ratio=0.8,token_sampler="topk")
model.load_state_dict(teacher.state_dict(),strict=False); model.train()
crit=dyvm.losses.DyVMLoss.for_model(model, nn.CrossEntropyLoss(), teacher)
opt=make_optimizer([p for p in model.parameters() if p.requires_grad],1e-4,0.01)
orig=V.gated_sum
def plain(y_f,y_b,g_f,g_b): return y_f+y_b+(g_f.sum()+g_b.sum())*0
memo={}
origcall=teacher.forward_detailed
def step():
    out=model(x,noise=None); loss,_=crit(x,out,y); opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
arms={"orig":orig,"plain":plain}
mode=sys.argv[2]
def setarm(k):
    if mode=="gated": V.gated_sum=arms[k]
    else:
        if k=="orig": teacher.forward_detailed=origcall
        else:
            if "o" not in memo:
                with torch.no_grad(): memo["o"]=origcall(x)
            teacher.forward_detailed=lambda *a,**k: memo["o"]
for k in arms:
    setarm(k)
    for _ in range(3): step()
T={k:[] for k in arms}
for r in range(int(sys.argv[1])):
    for k in (list(arms) if r%2==0 else list(arms)[::-1]):
        setarm(k)
        t=time.perf_counter()
        for _ in range(3): step()
        T[k].append((time.perf_counter()-t)/3)
ratios=sorted(a/b for a,b in zip(T["plain"],T["orig"]))
print(mode, "orig s/step %.3f" % statistics.median(T["orig"]), "knocked-out %.3f" % statistics.median(T["plain"]), "ratio median %.3f" % statistics.median(ratios), "IQR %.3f-%.3f" % (ratios[len(ratios)//4], ratios[3*len(ratios)//4]))
