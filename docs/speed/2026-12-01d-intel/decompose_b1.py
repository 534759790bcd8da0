"""Where DyVM-Vim-T's batch-1 time goes: Vim-T against DyVM-Vim-T variants, interleaved in one process.

Usage: python decompose_b1.py THREADS ROUNDS. Random weights (seed 0), routers fixed as in `dyvm bench`:
dyvm_rho1_all: every token kept (rho 1: the three stages run their predictors and gathers), every branch on;
dyvm_rho1_80: every token kept, 80% of branches; dyvm_all: rho 0.9, every branch on; dyvm: rho 0.9, 80% of
branches (the `dyvm bench` model). Prints each median time and the median per-round ratio to Vim-T.
"""
import sys, time, torch, statistics as st
from dyvm.bench import build_model
from dyvm.utils import retain_freed_memory
retain_freed_memory()
torch.set_num_threads(int(sys.argv[1]))
cpu = torch.device("cpu")
arms_m = {
    "vim": build_model("vim_tiny", cpu).eval(),
    "dyvm_rho1_all": build_model("dyvm_vim_tiny", cpu, routers_on=1.0, token_keep_ratio=1.0).eval(),
    "dyvm_rho1_80": build_model("dyvm_vim_tiny", cpu, routers_on=0.8, token_keep_ratio=1.0).eval(),
    "dyvm_all": build_model("dyvm_vim_tiny", cpu, routers_on=1.0).eval(),
    "dyvm": build_model("dyvm_vim_tiny", cpu, routers_on=0.8).eval(),
}
x = torch.randn(1, 3, 224, 224)
res = {k: [] for k in arms_m}
with torch.no_grad():
    for m in arms_m.values():
        for _ in range(3): m(x)
    for r in range(int(sys.argv[2])):
        for k, m in (arms_m.items() if r % 2 == 0 else reversed(list(arms_m.items()))):
            s = time.perf_counter()
            for _ in range(5): m(x)
            res[k].append((time.perf_counter() - s) / 5)
for k in res:
    print(f"{k:15s} {st.median(res[k])*1e3:7.2f} ms  /vim {st.median([a/b for a,b in zip(res[k], res['vim'])]):.3f}")
