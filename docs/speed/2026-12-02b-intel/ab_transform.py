"""The demo's image transforms with ToTensor + Normalize fused (dyvm.data.ToNormalizedTensor) against timm's own,
interleaved in one process: microseconds per Fashion-MNIST image, training (crop + flip) and eval transforms.

    python ab_transform.py [ROUNDS] [IMAGES]     (default 9 rounds of 1280 images; 1 torch thread, as the loader)
"""
import statistics
import sys
import time

import torch
from timm.data import create_transform

from dyvm.data import build_dataset, build_transform

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1280
torch.set_num_threads(1)
cfg = dict(input_size=(1, 28, 28), interpolation="bicubic", mean=(0.2860,), std=(0.3530,), crop_pct=0.875)
dataset = build_dataset("fashion-mnist", "train", None, channels=1, val_size=5000)
images = [dataset[i][0] for i in range(n)]
arms = {}
for name, train in (("train", True), ("eval", False)):
    kwargs = (dict(is_training=True, scale=(0.8, 1.0), hflip=0.5, auto_augment=None, re_prob=0.0, color_jitter=None)
              if train else dict(is_training=False, crop_pct=cfg["crop_pct"]))
    arms[name] = {"fused": build_transform(cfg, train, aa="none", scale=(0.8, 1.0), hflip=0.5),
                  "timm": create_transform(input_size=cfg["input_size"], interpolation="bicubic", mean=cfg["mean"],
                                           std=cfg["std"], **kwargs)}
for name, pair in arms.items():
    ratios, per = [], {"fused": [], "timm": []}
    for r in range(rounds + 1):
        t = {}
        for arm in (("fused", "timm") if r % 2 == 0 else ("timm", "fused")):
            tf = pair[arm]
            t0 = time.perf_counter()
            for img in images:
                tf(img)
            t[arm] = (time.perf_counter() - t0) / n * 1e6
        if r:  # the first round warms up
            ratios.append(t["fused"] / t["timm"])
            for arm in t:
                per[arm].append(t[arm])
    q = statistics.quantiles(ratios, n=4)
    print(f"{name}: timm {statistics.median(per['timm']):.1f} us/image, fused {statistics.median(per['fused']):.1f} "
          f"us/image; fused / timm time median {statistics.median(ratios):.3f} (IQR {q[0]:.3f}-{q[2]:.3f}, {rounds} rounds)")
