"""Eager against ``torch.compile`` inference, interleaved rounds in one process, 1 thread: Vim-T and DyVM-Vim-T
(random weights, 80% of the branches on, as ``dyvm bench --what dyvm``), batch 1 and 8. Eager CPU fp32 runs each
block as one extension call (``torch.ops.dyvm_scan.block_forward``); a compiled program reaches the scan and the
conv through their custom ops and lets inductor fuse the rest (DyVM's skipped branches are masked, not skipped).

    python docs/speed/2026-12-01b-intel/compile_ab.py OUT.json
"""
import json
import sys

import torch

from dyvm.bench import build_model
from dyvm.timing import format_comparison, interleave, timed


def main() -> None:
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    models = {"Vim-T": build_model("vim_tiny", cpu).eval(),
              "DyVM-T": build_model("dyvm_vim_tiny", cpu, routers_on=0.8).eval()}
    images = torch.randn(8, 3, 224, 224)
    groups, diffs = {}, {}
    for name, model in models.items():
        compiled = torch.compile(model)
        for b in (1, 8):
            x = images[:b]
            with torch.no_grad():
                diffs[f"{name} b{b}"] = float((compiled(x) - model(x)).abs().max())

            def run(m, x=x):
                def f():
                    with torch.no_grad():
                        m(x)
                return timed(f)
            groups[f"{name} b{b}"] = {"eager": run(model), "compiled": run(compiled)}
    print("largest |compiled - eager| logit:", diffs)
    res = interleave(groups, rounds=9, target_seconds=0.3)
    print(format_comparison(res, clock="cpu"))
    res["max_abs_diff"] = diffs
    with open(sys.argv[1], "w") as fh:
        json.dump(res, fh)


if __name__ == "__main__":
    main()
