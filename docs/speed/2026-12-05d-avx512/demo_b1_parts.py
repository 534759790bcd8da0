"""Where the demo models' batch-1 forward goes (one process, 64 single-image calls, three repeats): wall time inside
each named method, by perf_counter wrappers. python demo_b1_parts.py THREADS DYVM_CHECKPOINT"""
import collections
import functools
import sys
import time

import torch

import dyvm.models.dyvm as dy
import dyvm.models.vim as vim
from dyvm.evaluate import load_for_eval
from dyvm.utils import retain_freed_memory

retain_freed_memory()
torch.set_num_threads(int(sys.argv[1]))
acc = collections.Counter()


def wrap(owner, name, label):
    f = getattr(owner, name)

    @functools.wraps(f)
    def timed(*a, **k):
        t0 = time.perf_counter()
        r = f(*a, **k)
        acc[label] += time.perf_counter() - t0
        return r
    setattr(owner, name, timed)


for owner, name, label in ((vim.VisionMamba, "check_input", "check"), (vim.PatchEmbed, "forward", "patch"),
                           (vim.VisionMamba, "embed_tokens", "tokens"), (vim.VisionMamba, "embed_sequence", "embed"),
                           (vim.VisionMamba, "fused_stack", "fused_stack (py+cpp)"),
                           (vim.mix_cpp, "stack_forward", "stack_forward (cpp)"), (vim.VisionMamba, "final_norm", "norm"),
                           (vim.VisionMamba, "forward_head", "head"), (dy.DyVM, "_stacked_inference", "stacked")):
    wrap(owner, name, label)
teacher = load_for_eval("src/dyvm/assets/fashion_mnist_vim_teacher.pth").eval()
student = load_for_eval(sys.argv[2]).eval()
x = torch.randn(64, 1, 28, 28)
for name, model in (("teacher", teacher), ("dyvm", student)):
    with torch.inference_mode():
        for i in range(64):
            model(x[i:i + 1])
    for _ in range(3):
        acc.clear()
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(64):
                model(x[i:i + 1])
        total = (time.perf_counter() - t0) / 64
        print(name, f"total {total * 1e6:.0f} us", {k: round(v / 64 * 1e6) for k, v in acc.items()})
