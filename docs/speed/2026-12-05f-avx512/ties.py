"""Per pruning stage of a DyVM checkpoint: the share of the first 64 test images whose keep scores tie across the top-k cut.
Usage: python ties.py DYVM_CKPT"""
import sys, torch
sys.path.insert(0, __import__("os").path.dirname(__file__))
from real_images import real_images
from dyvm.evaluate import load_for_eval
S = load_for_eval(sys.argv[1] if len(sys.argv) > 1 else "/work/runs/demo-s32b/checkpoints/dyvm/best.pth").eval()
x = real_images(S)
with torch.no_grad():
    out = S.forward_inference(x)
counts = S.keep_counts()
for k, lp in enumerate(out.pred_scores):
    v = lp[..., 0]
    kk = counts[k]
    srt = v.sort(dim=1, descending=True).values
    tie = (srt[:, kk - 1] == srt[:, kk]).float().mean().item() if kk < v.shape[1] else 0
    print("stage", k, "keep", kk, "of", v.shape[1], "tie-at-cut share", tie, "zeros per image", (v == 0).sum(1).float().mean().item(), "-inf", torch.isinf(v).sum().item())
