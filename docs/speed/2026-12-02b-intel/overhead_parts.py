import sys, torch
from dyvm.bench import build_model, inference_runner, _rounds_kwargs, set_router_pattern
from dyvm.timing import interleave
size = sys.argv[1]; batch = int(sys.argv[3]) if len(sys.argv) > 3 else 1
torch.set_num_threads(2)
from dyvm.utils import retain_freed_memory; retain_freed_memory()
dev = torch.device("cpu")
vim = build_model(f"vim_{size}", dev)
def dy(**kw):
    m = build_model(f"dyvm_vim_{size}", dev, **kw)
    m.load_state_dict(vim.state_dict(), strict=False)
    if m.use_routers: set_router_pattern(m, 1.0)
    return m
arms = {"Vim": vim,
        "rho1 routers": dy(token_keep_ratio=1.0),
        "no pruning, routers": dy(use_pruning=False),
        "rho1, no routers": dy(token_keep_ratio=1.0, use_routers=False),
        "no pruning, no routers": dy(use_pruning=False, use_routers=False)}
groups = {"g": {k: inference_runner(m, batch, dev) for k, m in arms.items()}}
res = interleave(groups, units={"g": batch}, **_rounds_kwargs(int(sys.argv[2]), None, 1, False, None, None))
g = res["groups"]["g"]
for arm, r in g["ratios"].items():
    t = r["wall"]["time_summary"]
    print(f"{arm:28s} time/Vim median {t['median']:.4f} IQR {t['q1']:.4f}-{t['q3']:.4f}")
print("Vim ms", 1e3 * g["arms"]["Vim"]["seconds_summary"]["wall"]["median"])
