"""Forced branch gates on the demo DyVM (its Python per-block path, each block one mix_forward call), batch B, one
process, 9 interleaved rounds: every branch on / 80% per image at random (sub-batches) / 81% per (layer, direction)
for every image (no sub-batch). Usage: python gates_b64.py DYVM_CKPT B (run under each build's PYTHONPATH)."""
import sys, time, torch, statistics as st
from dyvm.checkpoint import model_from_checkpoint
from dyvm.utils import retain_freed_memory
retain_freed_memory()
torch.set_num_threads(2)
d = model_from_checkpoint(sys.argv[1])[0].eval()
B = int(sys.argv[2]); depth = d.depth
x = torch.randn(B, 1, 28, 28)
g = torch.Generator().manual_seed(0)
mixed = (torch.rand(depth, B, 2, generator=g) < 0.8).float()
# uniform: per (layer, direction) all images on or off; 80% on overall (13 of 16 on)
flat = torch.ones(depth * 2); flat[torch.randperm(depth * 2, generator=g)[:3]] = 0
uniform = flat.view(depth, 1, 2).expand(depth, B, 2).contiguous()
ones = torch.ones(depth, B, 2)
arms = {"all_on": lambda: d.forward_inference(x, gates=ones), "mixed80": lambda: d.forward_inference(x, gates=mixed),
        "uniform81": lambda: d.forward_inference(x, gates=uniform)}
res = {k: [] for k in arms}
with torch.no_grad():
    for f in arms.values():
        for _ in range(3): f()
    for r in range(9):
        for k, f in (arms.items() if r % 2 == 0 else reversed(list(arms.items()))):
            s = time.perf_counter()
            for _ in range(3): f()
            res[k].append((time.perf_counter() - s) / 3)
for k in res: print(f"{k:10s} {st.median(res[k])*1e3:7.2f} ms  /all_on {st.median([a/b for a,b in zip(res[k], res['all_on'])]):.3f}")
print("mixed on-fraction", float(mixed.mean()), "uniform", float(uniform.mean()))
