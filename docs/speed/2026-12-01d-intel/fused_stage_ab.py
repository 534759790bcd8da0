"""The fused pruning stage (dyvm_scan.prune_stage, commit d657568) against the Python stage, in one process.

Arms, interleaved (order alternating per round), 1 or 2 torch threads, retained freed memory as in the dyvm command:
  teacher / dyvm / dyvm-python-stage: the demo's Vim teacher and a trained demo DyVM at batch 1 (one test-set-sized
    random image per call, walking through 64) or at batch 64;
  vim / dyvm / dyvm-python-stage for Vim-T and DyVM-Vim-T (random weights, 80% of branches on) at batch 1.
Usage: python fused_stage_ab.py THREADS ROUNDS DEMO_DYVM_CHECKPOINT
Prints the medians (ms) and the median per-round ratios.
"""
import statistics
import sys
import time

import torch

import dyvm.models.dyvm as dyvm_module
from dyvm.bench import build_model
from dyvm.evaluate import load_for_eval
from dyvm.utils import retain_freed_memory

threads, rounds, demo_ckpt = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
retain_freed_memory()
torch.set_num_threads(threads)
fused_stage = dyvm_module.DyVM._fused_stage


def runner(model, images, batch, python_stage=False):
    state = {"i": 0}

    def run(calls):
        if python_stage:
            dyvm_module.DyVM._fused_stage = lambda *a, **k: None
        with torch.no_grad():
            for _ in range(calls):
                i = state["i"] if batch == 1 else 0
                state["i"] = (state["i"] + 1) % images.shape[0]
                model(images[i:i + batch])
        dyvm_module.DyVM._fused_stage = fused_stage
    return run


torch.manual_seed(0)
demo_images = torch.randn(64, 1, 28, 28)
teacher = load_for_eval("src/dyvm/assets/fashion_mnist_vim_teacher.pth").eval()
student = load_for_eval(demo_ckpt).eval()
vim = build_model("vim_tiny", torch.device("cpu")).eval()
dyvm_t = build_model("dyvm_vim_tiny", torch.device("cpu"), routers_on=0.8).eval()
big_images = torch.randn(4, 3, 224, 224)
groups = {
    "demo b1": (200, {"teacher": runner(teacher, demo_images, 1), "dyvm": runner(student, demo_images, 1),
                      "dyvm-python-stage": runner(student, demo_images, 1, True)}),
    "demo b64": (5, {"teacher": runner(teacher, demo_images, 64), "dyvm": runner(student, demo_images, 64),
                     "dyvm-python-stage": runner(student, demo_images, 64, True)}),
    "Vim-T b1": (5, {"teacher": runner(vim, big_images, 1), "dyvm": runner(dyvm_t, big_images, 1),
                     "dyvm-python-stage": runner(dyvm_t, big_images, 1, True)}),
}
for name, (calls, arms) in groups.items():
    for run in arms.values():
        run(max(1, calls // 4))
    times = {k: [] for k in arms}
    for r in range(rounds):
        for k in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            t = time.perf_counter()
            arms[k](calls)
            times[k].append((time.perf_counter() - t) / calls)
    ratio = lambda a, b: statistics.median([x / y for x, y in zip(times[a], times[b])])  # noqa: E731
    print(f"{name}: " + ", ".join(f"{k} {1e3 * statistics.median(v):.3f} ms" for k, v in times.items()))
    print(f"  dyvm/teacher {ratio('dyvm', 'teacher'):.3f}, python-stage/teacher "
          f"{ratio('dyvm-python-stage', 'teacher'):.3f}, fused/python stage {ratio('dyvm', 'dyvm-python-stage'):.3f}")
