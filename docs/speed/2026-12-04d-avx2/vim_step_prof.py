import sys, torch
from torch import nn
torch.set_num_threads(2)
import dyvm
from dyvm.engine import make_optimizer
from dyvm.utils import retain_freed_memory
retain_freed_memory()
kw = dict(img_size=28, patch_size=4, in_chans=1, depth=8, embed_dim=64, num_classes=10)
torch.manual_seed(0)
x = torch.randn(128, 1, 28, 28); y = torch.randint(0, 10, (128,))
vim = dyvm.create_model("vim_tiny", **kw).train()
opt = make_optimizer(list(vim.parameters()), 1e-4, 0.01)
ce = nn.CrossEntropyLoss()
def step():
    loss = ce(vim(x), y); opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for _ in range(3): step()
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(10): step()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=60))
