"""The fused inference path's hook check as a plain walk of the children (vim.tree_hooked, since this folder's commit)
against ``forward_hooked(*modules())`` (nn.Module's named walk, before), whole-model eval forward, interleaved in one
process by dyvm.timing.interleave. Usage: python ab_hook_walk.py THREADS ROUNDS DYVM_CKPT"""
import sys

import torch

from dyvm.bench import build_model
from dyvm.checkpoint import model_from_checkpoint
from dyvm.models import dyvm as dyvm_module, vim as vim_module
from dyvm.timing import format_comparison, interleave, timed
from dyvm.utils import retain_freed_memory

retain_freed_memory()
torch.set_num_threads(int(sys.argv[1]))
TREE = vim_module.tree_hooked


def named_walk(*roots):  # what the fused path called before: forward_hooked over nn.Module.modules()
    return vim_module.forward_hooked(*[m for r in roots for m in r.modules()])


def arm(model, x, walk):
    def call():
        vim_module.tree_hooked = dyvm_module.tree_hooked = walk
        return model(x)
    return timed(call)


teacher = model_from_checkpoint("src/dyvm/assets/fashion_mnist_vim_teacher.pth")[0].eval()
student = model_from_checkpoint(sys.argv[3])[0].eval()
tiny = build_model("dyvm_vim_tiny", torch.device("cpu"), routers_on=0.8).eval()
groups = {}
for name, model, x in [("demo teacher b1", teacher, torch.randn(1, 1, 28, 28)),
                       ("demo DyVM b1", student, torch.randn(1, 1, 28, 28)),
                       ("demo DyVM b64", student, torch.randn(64, 1, 28, 28)),
                       ("DyVM-Vim-T b1", tiny, torch.randn(1, 3, 224, 224))]:
    groups[name] = {"plain walk": arm(model, x, TREE), "named walk": arm(model, x, named_walk)}
with torch.no_grad():
    result = interleave(groups, rounds=int(sys.argv[2]))
print(format_comparison(result))
