"""The embedding's prefix placement from cached constants (TokenSequence.from_parts since this folder's commit) against
the per-image index arithmetic it replaced (the earlier from_parts, copied below), whole-model forward, interleaved in
one process by dyvm.timing.interleave. Usage: python ab_embed_layout.py THREADS ROUNDS DYVM_CKPT"""
import sys

import torch

import dyvm
from dyvm.checkpoint import model_from_checkpoint
from dyvm.models.tokens import TokenSequence, insert_prefix
from dyvm.timing import format_comparison, interleave, timed
from dyvm.utils import retain_freed_memory

retain_freed_memory()
torch.set_num_threads(int(sys.argv[1]))
NEW = TokenSequence.from_parts.__func__


def old_from_parts(cls, prefix, patches, layout):  # the code before this folder's commit
    batch, m = patches.shape[:2]
    counts = torch.full((batch,), m, dtype=torch.long, device=patches.device)
    pos = layout.positions(counts)
    ids = torch.arange(m, device=patches.device).expand(batch, m)
    return cls(insert_prefix(prefix, patches, pos), None, pos, ids, layout)


def arm(model, x, new):
    def call():
        TokenSequence.from_parts = classmethod(NEW if new else old_from_parts)
        return model(x)
    return timed(call)


teacher = model_from_checkpoint("src/dyvm/assets/fashion_mnist_vim_teacher.pth")[0].eval()
student = model_from_checkpoint(sys.argv[3])[0].eval()
vim_t = dyvm.create_model("vim_tiny").eval()
groups = {}
for name, model, x in [("demo teacher b1", teacher, torch.randn(1, 1, 28, 28)),
                       ("demo DyVM b1", student, torch.randn(1, 1, 28, 28)),
                       ("demo teacher b64", teacher, torch.randn(64, 1, 28, 28)),
                       ("Vim-T b1", vim_t, torch.randn(1, 3, 224, 224))]:
    with torch.no_grad():
        TokenSequence.from_parts = classmethod(old_from_parts); a = model(x)
        TokenSequence.from_parts = classmethod(NEW); b = model(x)
    assert torch.equal(a, b), name
    groups[name] = {"cached": arm(model, x, True), "per-image": arm(model, x, False)}
with torch.no_grad():
    result = interleave(groups, rounds=int(sys.argv[2]))
print(format_comparison(result))
