"""What DyVM-Vim-T's routers and stages cost at batch 1: Vim-T against DyVM-Vim-T variants, interleaved in one process.

Usage: python decompose_routers.py THREADS ROUNDS. Random weights (seed 0), every token kept (rho 1), every branch on:
  dyvm_plain: no routers, no pruning (what a DyVM costs with nothing dynamic; should equal Vim-T);
  dyvm_routers: 24 routers (all on), no pruning; dyvm_stages: no routers, three stages keeping every token;
  dyvm_both: routers and stages. Prints each median time and the median per-round ratio to Vim-T.
"""
import statistics as st
import sys
import time

import torch

from dyvm.bench import build_model
from dyvm.utils import retain_freed_memory

retain_freed_memory()
torch.set_num_threads(int(sys.argv[1]))
cpu = torch.device("cpu")
arms = {
    "vim": build_model("vim_tiny", cpu).eval(),
    "dyvm_plain": build_model("dyvm_vim_tiny", cpu, use_routers=False, use_pruning=False).eval(),
    "dyvm_routers": build_model("dyvm_vim_tiny", cpu, routers_on=1.0, use_pruning=False).eval(),
    "dyvm_stages": build_model("dyvm_vim_tiny", cpu, use_routers=False, token_keep_ratio=1.0).eval(),
    "dyvm_both": build_model("dyvm_vim_tiny", cpu, routers_on=1.0, token_keep_ratio=1.0).eval(),
}
x = torch.randn(1, 3, 224, 224)
res = {k: [] for k in arms}
with torch.no_grad():
    for m in arms.values():
        for _ in range(3):
            m(x)
    for r in range(int(sys.argv[2])):
        for k, m in (arms.items() if r % 2 == 0 else reversed(list(arms.items()))):
            s = time.perf_counter()
            for _ in range(5):
                m(x)
            res[k].append((time.perf_counter() - s) / 5)
for k in res:
    ratios = [a / b for a, b in zip(res[k], res["vim"])]
    q = st.quantiles(ratios, n=4)
    print(f"{k:13s} {st.median(res[k]) * 1e3:7.2f} ms  /vim {st.median(ratios):.3f} ({q[0]:.3f}-{q[2]:.3f})")
