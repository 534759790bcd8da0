"""Paired comparison on the canvas test split (all 10,000 images) of fine-tuned checkpoints against trained static:
how many images only one of the two gets right, and the exact McNemar p (dyvm.evaluate.paired_comparison).

Usage: python docs/study/twentysecond/paired.py RUNS_DIR NAME_A:NAME_B [...]   (run folders with best.pth)
"""
import json
import os
import sys

import torch

sys.argv, specs = sys.argv[:1], sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import canvas  # noqa: E402  (CANVAS / PLAIN from the environment, as the runs had them)
from dyvm.checkpoint import model_from_checkpoint  # noqa: E402
from dyvm.demo import _test_loader  # noqa: E402
from dyvm.evaluate import evaluate, paired_comparison  # noqa: E402

runs, hits, out = specs[0], {}, {}
for pair in specs[1:]:
    for name in pair.split(":"):
        if name not in hits:
            model, _ = model_from_checkpoint(os.path.join(runs, name, "best.pth"))
            loader = _test_loader(model, None, None, canvas=0 if canvas.PLAIN else canvas.CANVAS)
            stats = evaluate(model, loader, torch.device("cpu"), progress=False, hits=True)
            hits[name] = stats["hits"]
    a, b = pair.split(":")
    out[pair] = dict(paired_comparison(hits[a], hits[b]), top1_a=100 * hits[a].float().mean().item(),
                     top1_b=100 * hits[b].float().mean().item())
    print(pair, json.dumps(out[pair]))
