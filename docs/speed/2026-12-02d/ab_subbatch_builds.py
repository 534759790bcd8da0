"""Per-image branch selection at inference, this build against another (the sub-batch read in place and added into
the output in the scan's stores, against copies of its rows and index_add), on the demo's trained DyVM at batch 64
and 1: two worker processes, one per build, timed in interleaved rounds by dyvm.timing.interleave.

    python ab_subbatch_builds.py OTHER_SRC DYVM_CKPT THREADS ROUNDS

Arms per build: ``dyvm`` (the checkpoint as trained: its routers switch branches off only in layers 5-7, which run
on 15, 5 and 2 tokens), ``no-stages`` (the same model without token pruning: its routers' per-image decisions on
full-length layers 5-7, where sub-batches are large), ``teacher`` (the Vim, no routers: unchanged code, a control)."""
import json
import os
import subprocess
import sys

from dyvm.timing import format_comparison, interleave

WORKER = r'''
import json, sys, time, torch
from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import _test_loader
from dyvm.utils import retain_freed_memory
retain_freed_memory()
torch.set_num_threads(int(sys.argv[2]))
teacher = model_from_checkpoint("src/dyvm/assets/fashion_mnist_vim_teacher.pth")[0].eval()
dyvm = model_from_checkpoint(sys.argv[1])[0].eval()
flat = model_from_checkpoint(sys.argv[1])[0].eval(); flat.pruning_loc = []
x64 = next(iter(_test_loader(dyvm, None, 64, batch_size=64)))[0]
arms = {("dyvm", 64): (dyvm, x64), ("no-stages", 64): (flat, x64), ("teacher", 64): (teacher, x64),
        ("dyvm", 1): (dyvm, x64[:1]), ("no-stages", 1): (flat, x64[:1])}
print(json.dumps({"file": __import__("dyvm").__file__}), flush=True)
with torch.no_grad():
    for line in sys.stdin:
        name, batch, reps = line.split()
        model, x = arms[(name, int(batch))]
        start = time.perf_counter()
        for _ in range(int(reps)):
            out = model(x)
        print(json.dumps({"s": (time.perf_counter() - start) / int(reps), "sum": float(out.sum())}), flush=True)
'''


def worker(src, source, ckpt, threads):
    """A worker process running ``source`` (argv: the checkpoint, the thread count) on the build in ``src``; it answers
    "NAME BATCH REPS" lines with the seconds per forward and the logits' sum."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src), OMP_NUM_THREADS=threads)
    proc = subprocess.Popen([sys.executable, "-c", source, os.path.abspath(ckpt), threads], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    print(src, "->", json.loads(proc.stdout.readline())["file"], flush=True)
    return proc


def runner(proc, name, batch, reps, sums):
    """A dyvm.timing runner: n calls of `reps` forwards in the worker, timed there (wall clock only)."""
    def run(n):
        total = 0.0
        for _ in range(n):
            proc.stdin.write(f"{name} {batch} {reps}\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline())
            sums.setdefault((name, batch), set()).add(reply["sum"])
            total += reply["s"]
        return {"wall": total, "cpu": total}
    return run


def compare_builds(source, arms, other_src, ckpt, threads, rounds):
    """This build (``src``) against ``other_src``, one ``source`` worker each, in interleaved rounds over ``arms``
    [(name, batch, forwards per call)]; prints the table and whether both builds gave the same logits (also used by
    2026-12-02e/ab_param_cache.py)."""
    this, other = worker("src", source, ckpt, threads), worker(other_src, source, ckpt, threads)
    sums_this, sums_other = {}, {}
    groups = {f"{name} b{batch}": {"this build": runner(this, name, batch, reps, sums_this),
                                   "other build": runner(other, name, batch, reps, sums_other)}
              for name, batch, reps in arms}
    print(format_comparison(interleave(groups, rounds=rounds, repeats=1)))
    print("same logits sums in both builds:", {k: sums_this[k] == sums_other[k] for k in sums_this})


if __name__ == "__main__":
    compare_builds(WORKER, [("dyvm", 64, 5), ("no-stages", 64, 5), ("teacher", 64, 5), ("dyvm", 1, 200),
                            ("no-stages", 1, 200)], sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
