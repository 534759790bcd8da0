"""The DyVM fine-tuning step (demo configuration, batch 128, 2 threads) with the routers' rows read in the mixer's
split of xz (this build) against the same model reading them by their own gather (``router_rows`` patched to None,
the path before commit f7912eb: a zero-filled (B, L, 2E) gradient added per layer), in interleaved rounds of 3 steps.
Usage: python ab_router_rows.py ROUNDS"""
import statistics
import sys
import time

import torch
from torch import nn

import dyvm
import dyvm.losses
from dyvm.engine import make_optimizer
from dyvm.models.dyvm import DyVM
from dyvm.utils import retain_freed_memory

retain_freed_memory()
torch.set_num_threads(2)
torch.manual_seed(0)
K = dict(img_size=28, patch_size=4, in_chans=1, depth=8, embed_dim=64, num_classes=10)
x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
teacher = dyvm.create_model("vim_tiny", **K)
model = dyvm.create_model("dyvm_vim_tiny", **K, pruning_loc=[5, 6, 7], token_keep_ratio=0.3, block_keep_ratio=0.8,
                          token_sampler="topk")
model.load_state_dict(teacher.state_dict(), strict=False)
model.train()
crit = dyvm.losses.DyVMLoss.for_model(model, nn.CrossEntropyLoss(), teacher)
opt = make_optimizer([p for p in model.parameters() if p.requires_grad], 1e-4, 0.01)
rows = DyVM.router_rows
arms = {"split": rows, "gather": lambda self, seq, length: None}


def step():
    out = model(x, noise=None)
    loss, _ = crit(x, out, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


for fn in arms.values():
    DyVM.router_rows = fn
    for _ in range(3):
        step()
T = {k: [] for k in arms}
for r in range(int(sys.argv[1])):
    for k in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
        DyVM.router_rows = arms[k]
        t = time.perf_counter()
        for _ in range(3):
            step()
        T[k].append((time.perf_counter() - t) / 3)
ratios = sorted(a / b for a, b in zip(T["split"], T["gather"]))
n = len(ratios)
print(f"gather s/step {statistics.median(T['gather']):.4f}  split s/step {statistics.median(T['split']):.4f}  "
      f"split/gather time median {statistics.median(ratios):.3f}  IQR {ratios[n // 4]:.3f}-{ratios[(3 * n) // 4]:.3f}  "
      f"min-max {ratios[0]:.3f}-{ratios[-1]:.3f}  ({n} rounds)")
