"""Each layer's A = -exp(A_log) (and, at 42faa70, the halved out_proj weight) remembered between inference forwards
(this build) against computing them in every forward (another build), at batch 1 and 64: two worker processes, one
per build, timed in interleaved rounds by dyvm.timing.interleave.

    python ab_param_cache.py OTHER_SRC DYVM_CKPT THREADS ROUNDS

Arms per build: the demo's teacher (Vim, depth 8, D 64, 50 tokens) and trained DyVM (DYVM_CKPT) at batch 1 and 64,
and Vim-T (224 px, random weights) at batch 1."""
import os
import sys

# the two-build worker harness of the previous session's ab_subbatch_builds.py
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "2026-12-02d"))
from ab_subbatch_builds import compare_builds  # noqa: E402

WORKER = r'''
import json, sys, time, torch
import dyvm as lib
from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import _test_loader
from dyvm.utils import retain_freed_memory
retain_freed_memory()
torch.set_num_threads(int(sys.argv[2]))
teacher = model_from_checkpoint("src/dyvm/assets/fashion_mnist_vim_teacher.pth")[0].eval()
dy = model_from_checkpoint(sys.argv[1])[0].eval()
torch.manual_seed(0)
vim_t = lib.create_model("vim_tiny").eval()
x64 = next(iter(_test_loader(dy, None, 64, batch_size=64)))[0]
x224 = torch.randn(1, 3, 224, 224)
arms = {("teacher", 1): (teacher, x64[:1]), ("dyvm", 1): (dy, x64[:1]), ("teacher", 64): (teacher, x64),
        ("dyvm", 64): (dy, x64), ("vim-t", 1): (vim_t, x224)}
print(json.dumps({"file": lib.__file__}), flush=True)
with torch.no_grad():
    for line in sys.stdin:
        name, batch, reps = line.split()
        model, x = arms[(name, int(batch))]
        start = time.perf_counter()
        for _ in range(int(reps)):
            out = model(x)
        print(json.dumps({"s": (time.perf_counter() - start) / int(reps), "sum": float(out.sum())}), flush=True)
'''


if __name__ == "__main__":
    compare_builds(WORKER, [("teacher", 1, 300), ("dyvm", 1, 300), ("teacher", 64, 10), ("dyvm", 64, 10),
                            ("vim-t", 1, 5)], sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
