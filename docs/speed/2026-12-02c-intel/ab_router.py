import sys, time, torch, statistics
from torch import nn
import dyvm, dyvm.losses
from dyvm.models import dyvm as DM
from dyvm.models.tokens import gather_tokens
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
orig=DM.DyVM.router_input
def detached(self, xz, seq, positions=None):
    if positions is not None: return orig(self, xz, seq, positions)
    return gather_tokens(xz.detach(), seq.prefix_pos).mean(1)
def step():
    out=model(x,noise=None); loss,_=crit(x,out,y); opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
arms={"orig":orig,"detached":detached}
for a in arms.values():
    DM.DyVM.router_input=a
    for _ in range(3): step()
T={k:[] for k in arms}
for r in range(int(sys.argv[1])):
    for k in (list(arms) if r%2==0 else list(arms)[::-1]):
        DM.DyVM.router_input=arms[k]
        t=time.perf_counter()
        for _ in range(3): step()
        T[k].append((time.perf_counter()-t)/3)
ratios=[a/b for a,b in zip(T["detached"],T["orig"])]
print("orig s/step", statistics.median(T["orig"]), "detached", statistics.median(T["detached"]), "ratio detached/orig median", statistics.median(ratios), sorted(ratios))
