"""The demo's DyVM fine-tuning step (batch 128, 2 threads) with one part changed, against the step as it is, timed by
dyvm.timing.interleave (the harness of every `dyvm bench` comparison; rounds of 3 steps per arm). Usage:

    python ab_dyvm_step.py MODE ROUNDS

MODE (the second arm):
  router-detached  the routers read xz detached: no zero-filled (B, L, 2E) gradient per layer (an upper bound)
  gated            gated_sum replaced by y_f + y_b, the gates' gradient kept alive (upper bound of a fused gate)
  teacher          the frozen teacher's forward replaced by a cached output (the teacher's share of the step)
  router-rows      routers' rows read by their own gather instead of the mixer's split (only at 216e0e2, where
                   DyVM.router_rows existed; reverted in d6c9ddf)
The outputs in measured.txt / ab_router_rows.txt came from the earlier one-mode copies of this script (ab_router.py,
ab_gated.py, ab_router_rows.py, in git at 60dc936: the same arms, hand-written alternation); this one was rerun at
its commit, see ab_dyvm_step.txt."""
import sys

import torch
from torch import nn

import dyvm
import dyvm.losses
from dyvm.engine import make_optimizer
from dyvm.models import vim as vim_module
from dyvm.models.dyvm import DyVM
from dyvm.models.tokens import gather_tokens
from dyvm.timing import format_comparison, interleave, timed
from dyvm.utils import retain_freed_memory

mode, rounds = sys.argv[1], int(sys.argv[2])
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

# (owner, attribute, value of the changed arm): set before each call of an arm, the original restored for the other
router_input = DyVM.router_input
with torch.no_grad():
    cached = teacher.forward_detailed(x)
CHANGES = {
    "router-detached": (DyVM, "router_input", lambda self, xz, seq, positions=None: (
        router_input(self, xz, seq, positions) if positions is not None
        else gather_tokens(xz.detach(), seq.prefix_pos).mean(1))),
    "gated": (vim_module, "gated_sum", lambda y_f, y_b, g_f, g_b: y_f + y_b + (g_f.sum() + g_b.sum()) * 0),
    "teacher": (teacher, "forward_detailed", lambda *a, **k: cached),
    "router-rows": (DyVM, "router_rows", lambda self, seq, length: None),
}
if mode not in CHANGES:
    raise SystemExit(f"MODE must be one of {', '.join(CHANGES)}, got {mode!r}")
owner, name, changed = CHANGES[mode]
if not hasattr(owner, name):
    raise SystemExit(f"MODE {mode}: this build has no {name} to change (router-rows ran at 216e0e2)")
original = getattr(owner, name)


def step(value):
    def run():
        setattr(owner, name, value)
        out = model(x, noise=None)
        loss, _ = crit(x, out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


result = interleave({f"DyVM step, {mode}": {"as is": timed(step(original)), mode: timed(step(changed))}},
                    rounds=rounds, repeats=3, warmup=3)
setattr(owner, name, original)
print(format_comparison(result, clock="wall"))
