"""Denormals in the demo's DyVM fine-tuning: whole training runs with and without flushing them, interleaved.

    python denormals_ab.py [ROUNDS] [STEPS] [THREADS]    (default 3 rounds, 50 steps, 2 threads; run it alone)

Each round trains the demo's DyVM fine-tune twice from the shipped teacher (ρ 0.3 before layers 5, 6, 7, β 0.8,
top-k sampler, batch 128, the demo's options, the first STEPS x 128 training images, `train()` as `dyvm demo` calls
it): once with denormals flushed on every thread for the whole run (what `dyvm train` does since this commit) and
once without (before), in alternating order. The denormals appear only once the keep predictors grow confident
(after ~15-25 steps), and whether a step meets them depends on the state the earlier steps left (a first
version of this script that flushed on alternate steps of one run measured 1.18x), so the arms are whole runs. Prints every step's seconds, and per run the
median over the steps from 30 on; then per round the ratio unflushed / flushed of those medians.
"""
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager

from dyvm.utils import retain_freed_memory

retain_freed_memory()
import dyvm.engine as engine  # noqa: E402
from dyvm.demo import PLANS, TEACHER_FILE, finetune_options  # noqa: E402
from dyvm.kernels import scan_cpp  # noqa: E402

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 50
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
opts = finetune_options(PLANS["default"], TEACHER_FILE, subset=128 * steps, threads=threads, no_progress=True, seed=0,
                        epochs=1, val_size=500, token_sampler="topk")
FLUSH = [True]


@contextmanager
def switched(device):  # replaces engine.denormals_flushed: the arm decides
    previous = scan_cpp.set_flush_denormal(FLUSH[0])
    try:
        yield
    finally:
        scan_cpp.set_flush_denormal(previous)


engine.denormals_flushed = switched
marks, real_epoch = [], engine.train_one_epoch


def epoch(run, ep, show_progress=False):
    update = run.scheduler.step_update

    def step_done(*args, **kwargs):  # called once at the end of every step
        marks.append(time.perf_counter())
        return update(*args, **kwargs)

    run.scheduler.step_update = step_done
    marks.append(time.perf_counter())
    try:
        return real_epoch(run, ep, show_progress)
    finally:
        run.scheduler.step_update = update


engine.train_one_epoch = epoch


def one_run(flush: bool) -> float:
    FLUSH[0] = flush
    marks.clear()
    with tempfile.TemporaryDirectory() as tmp:
        engine.train(output=tmp, **opts)
    secs = [b - a for a, b in zip(marks, marks[1:])]
    late = statistics.median(secs[30:])
    print(f"{'flushed  ' if flush else 'unflushed'} median from step 30 {late:.3f} s; steps: "
          + " ".join(f"{s:.2f}" for s in secs), flush=True)
    return late


ratios = []
for r in range(rounds):
    order = (True, False) if r % 2 == 0 else (False, True)
    t = {flush: one_run(flush) for flush in order}
    ratios.append(t[False] / t[True])
    print(f"round {r}: unflushed / flushed {ratios[-1]:.2f}", flush=True)
print(f"unflushed / flushed step time (median of steps >= 30), per round: {', '.join(f'{x:.2f}' for x in ratios)}; "
      f"median {statistics.median(ratios):.2f}")
