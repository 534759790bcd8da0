"""Where the denormals come from: the trained DyVM's keep log-probabilities on the training path.

    python keep_logp.py CHECKPOINT    (the demo's DyVM best.pth; the first 256 test images, no noise)

p(keep) = exp(log p) is denormal (or 0) where log p < -87.3 (below -103.3 it is 0); the straight-through keep
decision's gradient is multiplied by it.
"""
import sys

import torch
import torchvision.transforms as T

from dyvm.data import build_dataset
from dyvm.evaluate import load_for_eval

model = load_for_eval(sys.argv[1], None, {})
images = build_dataset("fashion-mnist", "test", None, channels=1)
x = torch.stack([T.functional.normalize(T.functional.to_tensor(images[i][0]), (0.2860,), (0.3530,)) for i in range(256)])
logs, predictor_forward = [], type(model.score_predictors[0]).forward


def recorded(self, *args, **kwargs):
    out = predictor_forward(self, *args, **kwargs)
    logs.append(out.detach())
    return out


type(model.score_predictors[0]).forward = recorded
model.train()
with torch.no_grad():
    model.forward_train(x, noise=None)
for stage, logp in enumerate(logs):
    keep = logp[..., 0]
    print(f"stage {stage}: log p(keep) min {keep.min().item():.1f}; fraction below -87.3 (p denormal or 0) "
          f"{(keep < -87.3).float().mean().item():.3f}; below -103.3 (p = 0) {(keep < -103.3).float().mean().item():.3f}")
