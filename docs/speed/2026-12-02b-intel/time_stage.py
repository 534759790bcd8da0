import sys, time, statistics, torch
import torch.nn.functional as F
from dyvm.bench import build_model
from dyvm.kernels import mix_cpp
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
from dyvm.utils import retain_freed_memory; retain_freed_memory()
size = sys.argv[1] if len(sys.argv) > 1 else "tiny"
D, L = {"tiny": (192, 197), "small": (384, 197), "demo": (64, 50)}[size]
m = build_model("dyvm_vim_tiny" if size != "small" else "dyvm_vim_small", torch.device("cpu"), **({} if size != "demo" else dict(img_size=28, patch_size=4, in_chans=1, depth=8, embed_dim=64))).eval()
pred = m.score_predictors[0]
h = torch.randn(1, L, D); r = torch.randn(1, L, D); ids = torch.arange(L - 1)[None]
params = pred.fused_params(); eps = pred.in_conv[0].eps
keep = int(0.7 * (L - 1)); mid = L // 2
def stage(): mix_cpp.prune_stage(h, r, ids, params, eps, keep, [mid], [keep // 2])
W = torch.randn(2, 2 * 2 * D) * 0.01; bb = torch.zeros(2); xz = torch.randn(1, L, 4 * D)
def router():
    x = xz.select(1, mid); lg = F.linear(x, W, bb); return torch.sigmoid(lg).gt(0.5).float()
a = torch.randn(1, L - 1, D)
def gelu(): F.gelu(a)
def gelu_t(): F.gelu(a.transpose(1, 2))
def ln(): F.layer_norm(a, (D,), params[0], params[1])
def lin(): F.linear(a, params[2], params[3])
def topk(): torch.randn(1, L - 1).topk(keep, 1)
for name, f in (("stage", stage), ("router(py ops)", router), ("gelu", gelu), ("gelu noncontig", gelu_t), ("layer_norm", ln), ("linear DxD", lin), ("randn+topk", topk)):
    for _ in range(200): f()
    ts = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(300): f()
        ts.append((time.perf_counter() - t0) / 300 * 1e6)
    print(f"{name:16s} {statistics.median(ts):8.1f} us (min {min(ts):.1f})")
from torch.profiler import profile
with profile(record_shapes=True) as p:
    for _ in range(200): stage()
print(p.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=30, max_shapes_column_width=50))
