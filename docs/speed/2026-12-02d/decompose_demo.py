"""Where the demo DyVM's time goes: the teacher against DyVM variants of one checkpoint, interleaved in one process by
dyvm.timing.interleave (random-normal images). Usage: python decompose_demo.py TEACHER DYVM THREADS ROUNDS [BATCH].
Arms: dyvm (as trained), no_routers (every branch on), rho1 (the stages run and keep every token), no_stages (no token
pruning, routers on), bare (neither); ratios are time / the teacher's."""
import copy
import sys

import torch

from dyvm.checkpoint import model_from_checkpoint
from dyvm.timing import format_comparison, interleave, timed
from dyvm.utils import retain_freed_memory

retain_freed_memory()
torch.set_num_threads(int(sys.argv[3]))
teacher = model_from_checkpoint(sys.argv[1])[0].eval()
student = model_from_checkpoint(sys.argv[2])[0].eval()


def variant(rho=None, **attrs):
    model = copy.deepcopy(student)
    if rho is not None:
        model.configure(token_keep_ratio=rho)
    for name, value in attrs.items():
        setattr(model, name, value)
    return model


arms = {"teacher": teacher, "dyvm": student, "no_routers": variant(use_routers=False), "rho1": variant(rho=1.0),
        "no_stages": variant(pruning_loc=[]), "bare": variant(pruning_loc=[], use_routers=False)}
batch = int(sys.argv[5]) if len(sys.argv) > 5 else 1
x = torch.randn(batch, 1, 28, 28)
with torch.no_grad():
    result = interleave({f"batch {batch}": {name: timed(lambda m=m: m(x)) for name, m in arms.items()}},
                        rounds=int(sys.argv[4]))
print(format_comparison(result))
