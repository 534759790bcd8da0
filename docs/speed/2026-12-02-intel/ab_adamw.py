"""One process, interleaved: AdamW step on the demo DyVM's parameters (190 tensors), for-loop (torch's CPU
default) vs foreach vs fused. Usage: ab_adamw.py THREADS ROUNDS"""
import statistics, sys, time
import torch
import dyvm
torch.set_num_threads(int(sys.argv[1]))
K = dict(img_size=28, patch_size=4, in_chans=1, depth=8, embed_dim=64, num_classes=10)
model = dyvm.create_model("dyvm_vim_tiny", **K, pruning_loc=[5, 6, 7], token_keep_ratio=0.3, block_keep_ratio=0.8)
params = [p for p in model.parameters() if p.requires_grad]
for p in params: p.grad = torch.randn_like(p)
opts = {"loop": torch.optim.AdamW(params, lr=1e-4, foreach=False),
        "foreach": torch.optim.AdamW(params, lr=1e-4, foreach=True),
        "fused": torch.optim.AdamW(params, lr=1e-4, fused=True)}
def timed(k, n=5):
    t = time.perf_counter()
    for _ in range(n): opts[k].step()
    return (time.perf_counter() - t) / n
for k in opts: timed(k, 3)
res = {k: [] for k in opts}
for r in range(int(sys.argv[2])):
    for k in (list(opts) if r % 2 == 0 else list(opts)[::-1]):
        res[k].append(timed(k))
for k in opts:
    rat = [a / b for a, b in zip(res[k], res["loop"])]
    print(f"{k:8s} median {statistics.median(res[k])*1e3:.2f} ms, time / loop {statistics.median(rat):.3f}")
# same values? one step each from the same state
import copy
ps = [[p.detach().clone().requires_grad_() for p in params] for _ in range(3)]
for group in ps:
    for p, q in zip(group, params): p.grad = q.grad.clone()
o = [torch.optim.AdamW(ps[0], lr=1e-3, weight_decay=0.05, foreach=False), torch.optim.AdamW(ps[1], lr=1e-3, weight_decay=0.05, foreach=True), torch.optim.AdamW(ps[2], lr=1e-3, weight_decay=0.05, fused=True)]
for _ in range(3):
    for x in o: x.step()
print("foreach == loop:", all(torch.equal(a, b) for a, b in zip(ps[0], ps[1])),
      "fused == loop:", all(torch.equal(a, b) for a, b in zip(ps[0], ps[2])),
      "fused max diff:", max((a - b).abs().max().item() for a, b in zip(ps[0], ps[2])))
