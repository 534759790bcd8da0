import torch, time, statistics, torch.nn.functional as F
from dyvm.utils import retain_freed_memory; retain_freed_memory()
torch.set_num_threads(2)
def t(f, n):
    for _ in range(5): f()
    ts = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(n): f()
        ts.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(ts)
def unfold_mm(x, w, b, p):
    B, C, H, W = x.shape
    cols = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B * (H // p) * (W // p), C * p * p)
    return torch.addmm(b, cols, w.reshape(w.shape[0], -1).t()).view(B, (H // p) * (W // p), -1)
for (B, C, H, p, D, train) in ((1, 1, 28, 4, 64, False), (64, 1, 28, 4, 64, False), (128, 1, 28, 4, 64, True),
                               (1, 3, 224, 16, 192, False), (8, 3, 224, 16, 192, False), (1, 3, 224, 16, 384, False), (64, 3, 224, 16, 192, False)):
    x = torch.randn(B, C, H, H); w = torch.randn(D, C, p, p, requires_grad=train); b = torch.randn(D, requires_grad=train)
    def conv():
        y = F.conv2d(x, w, b, stride=p).flatten(2).transpose(1, 2)
        if train: y.sum().backward()
    def mm():
        y = unfold_mm(x, w, b, p)
        if train: y.sum().backward()
    with torch.no_grad() if not train else torch.enable_grad():
        n = max(3, int(2000 / max(1, B * (H // 28) ** 2)))
        c, m = t(conv, n), t(mm, n)
        with torch.no_grad():
            d = (F.conv2d(x, w, b, stride=p).flatten(2).transpose(1, 2) - unfold_mm(x, w, b, p)).abs().max().item()
    print(f"B {B:3d} C {C} H {H:3d} D {D}{' train' if train else ''}: conv {c:9.1f} us  unfold+mm {m:9.1f} us  ratio {m / c:.2f}  maxdiff {d:.1e}")
