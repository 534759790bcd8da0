"""Profile the demo-config Vim / DyVM training steps as `dyvm bench --what train-step` builds them.
Usage: python prof_step.py {vim,dyvm} THREADS [bf16]   (run from the repository root)"""
import os, sys, torch
import dyvm
kind = sys.argv[1]; threads = int(sys.argv[2]); ac = len(sys.argv) > 3 and sys.argv[3] == "bf16"
torch.set_num_threads(threads)
import importlib.util
spec = importlib.util.spec_from_file_location("w", os.path.join(os.path.dirname(dyvm.__file__), "_train_step_worker.py"))
w = importlib.util.module_from_spec(spec); spec.loader.exec_module(w)
from dyvm.engine import denormals_flushed
steps, *_ = w._make_steps(128, 0, ac)
fn = steps[kind]
with denormals_flushed(torch.device("cpu")):
    for _ in range(3): fn()
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3): fn()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
