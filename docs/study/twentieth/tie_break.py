"""Test top-1 of DyVM checkpoints whose keep predictor ties, under three rules for the tied slots at a stage's cut
(Python inference path, the 10,000 test images): `spread` (this build: static selection's evenly spaced slots among
the tied ones, dyvm.dynamic.top_k_spreading_ties), `topk` (before: whatever order torch's top-k returns ties in; on
this CPU a block just after the sequence's middle, e.g. slots 25-37 and 46 for 14 of 49), `middle` (the tied slots
nearest the sequence's middle, where Vim's class token sits).

Usage: python docs/study/twentieth/tie_break.py CHECKPOINT...
"""
import sys

import torch

import dyvm.dynamic as dyn
from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import _test_loader
from dyvm.evaluate import evaluate


def topk_order(scores, k):
    return scores.topk(k, dim=1).indices.sort(dim=1).values


def middle_first(scores, k):
    n = scores.shape[1]
    pos = torch.arange(n, dtype=torch.float64)
    order = torch.argsort((pos - (n - 1) / 2).abs() + pos * 1e-6)  # middle-first, then lower slot
    top = scores[:, order].sort(dim=1, descending=True, stable=True).indices[:, :k]
    return order[top].sort(dim=1).values


RULES = {"spread": dyn.top_k_spreading_ties, "topk": topk_order, "middle": middle_first}
torch.set_num_threads(2)
for path in sys.argv[1:]:
    model, _ = model_from_checkpoint(path)
    model.eval()
    model._fused_stage = lambda *a, **k: None  # the Python path, where the rule is swapped
    model._stacked_inference = lambda *a, **k: None
    loader = _test_loader(model, None, 10000, canvas=0)
    row = {}
    for name, rule in RULES.items():
        dyn.top_k_spreading_ties = rule
        stats = evaluate(model, loader, torch.device("cpu"), progress=False)
        row[name] = (round(stats["top1"], 2), stats.get("keep_ties"))
    dyn.top_k_spreading_ties = RULES["spread"]
    print(path, row, flush=True)
