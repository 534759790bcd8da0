"""Per-op self time of the demo's DyVM fine-tuning steps in train(): steps 5-10 ("early") against 37-42 ("late").

    python phase_profile.py [--no-flush]

At commit 4c00e43 nothing flushed denormals; from 4c28db9 on `dyvm train` does, and --no-flush turns that off
to see the slowdown again.
"""
import sys, time, tempfile, torch
from contextlib import nullcontext
from torch.profiler import profile
from dyvm.utils import retain_freed_memory; retain_freed_memory()
from dyvm.demo import PLANS, finetune_options, TEACHER_FILE
from dyvm.engine import train
import dyvm.engine as engine
if "--no-flush" in sys.argv:
    engine.denormals_flushed = lambda device: nullcontext()
plan = PLANS["default"]
steps = 44
opts = finetune_options(plan, TEACHER_FILE, **dict(subset=128 * steps, threads=2, no_progress=True, seed=0, epochs=1, val_size=500, token_sampler="topk"))
orig = engine.train_one_epoch
state = {"n": 0, "p": None, "res": {}}
def wrapped(run, epoch, show_progress=False):
    su = run.scheduler.step_update
    def rec(*a, **k):
        n = state["n"]; state["n"] += 1
        if n in (4, 36):
            state["p"] = profile(); state["p"].__enter__(); state["t0"] = time.perf_counter()
        if n in (10, 42):
            state["p"].__exit__(None, None, None)
            dt = (time.perf_counter() - state["t0"]) / 6
            state["res"][n] = ({e.key: e.self_cpu_time_total / 6 for e in state["p"].key_averages()}, dt)
            if n == 42: report()
        return su(*a, **k)
    run.scheduler.step_update = rec
    return orig(run, epoch, show_progress)
def report():
    (a, ta), (b, tb) = state["res"][10], state["res"][42]
    print("s/step early", ta, "late", tb)
    rows = sorted(((b.get(k, 0) - a.get(k, 0), k) for k in set(a) | set(b)), reverse=True)
    for d, k in rows[:15]:
        print(f"{d / 1e3:8.1f} ms  {k[:50]:50s} early {a.get(k, 0) / 1e3:8.1f} late {b.get(k, 0) / 1e3:8.1f}", flush=True)
engine.train_one_epoch = wrapped
with tempfile.TemporaryDirectory() as tmp:
    train(output=tmp, **opts)
