"""Every block and stage in one extension call (VisionMamba.fused_stack) against one call per block and stage, in
one process.

Arms, interleaved (order alternating per round), retained freed memory as in the dyvm command:
  teacher / dyvm: the demo's Vim teacher and a trained demo DyVM at batch 1 (one random test-sized image per call,
    walking through 64) and at batch 64; Vim-T / DyVM-Vim-T (random weights, 80% of branches on) at batch 1;
  each with the stacked call ("stack") and with the per-layer calls ("layers": fused_stack returning None, the
    path of the commit before).
Usage: python stack_ab.py THREADS ROUNDS DEMO_DYVM_CHECKPOINT
Prints medians (ms), DyVM/teacher per build and stack/layers per model (medians of per-round ratios, IQR).
"""
import statistics
import sys
import time

import torch

import dyvm.models.vim as vim_module
from dyvm.bench import build_model
from dyvm.evaluate import load_for_eval
from dyvm.utils import retain_freed_memory

threads, rounds, demo_ckpt = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
retain_freed_memory()
torch.set_num_threads(threads)
stack = vim_module.VisionMamba.fused_stack


def runner(model, images, batch, layers=False):
    state = {"i": 0}

    def run(calls):
        vim_module.VisionMamba.fused_stack = (lambda *a, **k: None) if layers else stack
        with torch.no_grad():
            for _ in range(calls):
                i = state["i"] if batch == 1 else 0
                state["i"] = (state["i"] + 1) % images.shape[0]
                model(images[i:i + batch])
        vim_module.VisionMamba.fused_stack = stack
    return run


torch.manual_seed(0)
demo_images = torch.randn(64, 1, 28, 28)
teacher = load_for_eval("src/dyvm/assets/fashion_mnist_vim_teacher.pth").eval()
student = load_for_eval(demo_ckpt).eval()
vim = build_model("vim_tiny", torch.device("cpu")).eval()
dyvm_t = build_model("dyvm_vim_tiny", torch.device("cpu"), routers_on=0.8).eval()
big_images = torch.randn(4, 3, 224, 224)
groups = {
    "demo b1": (200, teacher, student, demo_images, 1),
    "demo b64": (5, teacher, student, demo_images, 64),
    "Vim-T b1": (5, vim, dyvm_t, big_images, 1),
}
for name, (calls, t_model, d_model, images, batch) in groups.items():
    arms = {f"{who}-{how}": runner(m, images, batch, how == "layers")
            for who, m in (("teacher", t_model), ("dyvm", d_model)) for how in ("stack", "layers")}
    for run in arms.values():
        run(max(1, calls // 4))
    times = {k: [] for k in arms}
    for r in range(rounds):
        for k in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            t = time.perf_counter()
            arms[k](calls)
            times[k].append((time.perf_counter() - t) / calls)

    def ratio(a, b):
        q = statistics.quantiles([x / y for x, y in zip(times[a], times[b])], n=4)
        return f"{statistics.median([x / y for x, y in zip(times[a], times[b])]):.3f} ({q[0]:.3f}-{q[2]:.3f})"
    print(f"{name}: " + ", ".join(f"{k} {1e3 * statistics.median(v):.3f} ms" for k, v in times.items()))
    print(f"  dyvm/teacher: stack {ratio('dyvm-stack', 'teacher-stack')}, layers {ratio('dyvm-layers', 'teacher-layers')}")
    print(f"  stack/layers: teacher {ratio('teacher-stack', 'teacher-layers')}, dyvm {ratio('dyvm-stack', 'dyvm-layers')}")
