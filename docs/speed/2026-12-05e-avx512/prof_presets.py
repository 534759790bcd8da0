"""Profile five batch-1 forwards of vim_SIZE and dyvm_vim_SIZE (80% of branches on) in eval: python prof_presets.py small bf16|fp32"""
import torch, time, sys
from dyvm.bench import build_model, autocast_context
from dyvm.utils import retain_freed_memory
retain_freed_memory()
torch.set_num_threads(2)
dev = torch.device("cpu")
size = sys.argv[1]; dtype = sys.argv[2]
vim = build_model(f"vim_{size}", dev).eval(); dy = build_model(f"dyvm_vim_{size}", dev, routers_on=0.8).eval()
x = torch.randn(1, 3, 224, 224)
def run(m, n=5):
    with torch.no_grad(), autocast_context(dev, dtype):
        for _ in range(n): m(x)
run(vim, 3); run(dy, 3)
from torch.profiler import profile, ProfilerActivity
for name, m in (("vim", vim), ("dyvm", dy)):
    with profile(activities=[ProfilerActivity.CPU]) as p:
        run(m, 5)
    print("=====", name)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
