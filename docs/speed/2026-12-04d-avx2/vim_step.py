import sys, time, torch
from torch import nn
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
import dyvm
from dyvm.engine import make_optimizer
kw = dict(img_size=28, patch_size=4, in_chans=1, depth=8, embed_dim=64, num_classes=10)
torch.manual_seed(0)
x = torch.randn(128, 1, 28, 28); y = torch.randint(0, 10, (128,))
vim = dyvm.create_model("vim_tiny", **kw).train()
opt = make_optimizer(list(vim.parameters()), 1e-4, 0.01)
ce = nn.CrossEntropyLoss()
def step():
    loss = ce(vim(x), y); opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for _ in range(3): step()
n = int(sys.argv[1])
t = time.perf_counter()
for _ in range(n): step()
print("img/s", 128 * n / (time.perf_counter() - t))
