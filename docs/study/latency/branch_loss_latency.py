"""Latency of DyVMs trained with the paper's branch keep-ratio loss and with the cost-weighted one, against their
Vim teacher, on the first 64 Fashion-MNIST test images, interleaved in one process (dyvm.timing.interleave): batch 1
walks through the images one per call (the routers decide per image), batch 8 / 64 are the first 8 / 64 images.

    python docs/study/latency/branch_loss_latency.py TEACHER OUT.json THREADS ROUNDS NAME=CKPT [NAME=CKPT ...]

Prints, per batch, each model's median time and its median per-round time ratio to the teacher's, then each DyVM's
official FLOPs cut (branch keep measured on the 10,000 test images) and latency cut / FLOPs cut."""
import json
import sys

import torch

from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import _test_loader
from dyvm.evaluate import evaluate, image_runner
from dyvm.flops import flops_from_stats
from dyvm.timing import format_comparison, interleave
from dyvm.utils import retain_freed_memory

retain_freed_memory()
teacher_path, out_path, threads, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
models = {"teacher": model_from_checkpoint(teacher_path)[0].eval()}
for spec in sys.argv[5:]:
    name, path = spec.split("=", 1)
    models[name] = model_from_checkpoint(path)[0].eval()
loader = _test_loader(models["teacher"], None, None)
images = next(iter(loader))[0][:64]   # the loader's first batch holds more than 64 images
flops = {}
for name, model in models.items():
    stats = evaluate(model, loader, torch.device("cpu"), progress=False)
    flops[name] = dict(top1=stats["top1"], **flops_from_stats(model, stats),
                       branch_keep=stats.get("branch_keep"))
batches = (1, 8, 64)
groups = {f"batch {b}": {name: image_runner(m, images, b) for name, m in models.items()} for b in batches}
result = interleave(groups, rounds=rounds, units={f"batch {b}": b for b in batches}, target_seconds=0.3)
print(format_comparison(result))
summary = {}
for name in models:
    if name == "teacher":
        continue
    cut = 1 - flops[name]["gflops_official"] / flops["teacher"]["gflops_official"]
    row = dict(top1=flops[name]["top1"], flops_cut_official=cut)
    for b in batches:
        ratio = result["groups"][f"batch {b}"]["ratios"][name]["wall"]["time_summary"]["median"]
        row[f"b{b}"] = dict(time_ratio=ratio, latency_cut=1 - ratio, latency_cut_over_flops_cut=(1 - ratio) / cut)
    summary[name] = row
    print(name, json.dumps(row))
with open(out_path, "w") as fh:
    json.dump(dict(summary=summary, flops=flops, result=result, threads=threads, rounds=rounds,
                   argv=sys.argv), fh, indent=1)
