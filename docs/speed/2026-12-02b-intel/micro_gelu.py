import torch, time, torch.nn.functional as F
torch.set_num_threads(2)
def t(f, n=2000):
    for _ in range(100): f()
    t0 = time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter() - t0) / n * 1e6
a = torch.randn(1, 49, 64); b = torch.randn(1, 49, 32); c = torch.randn(1, 49, 16)
x = torch.randn(1, 1, 28, 28); w = torch.randn(64, 1, 4, 4); bias = torch.randn(64)
for name, f in {"gelu 49x64": lambda: F.gelu(a), "gelu tanh 49x64": lambda: F.gelu(a, approximate="tanh"),
                "gelu 49x32": lambda: F.gelu(b), "gelu 49x16": lambda: F.gelu(c), "silu 49x64": lambda: F.silu(a),
                "conv2d patch": lambda: F.conv2d(x, w, bias, stride=4),
                "unfold+mm": lambda: torch.addmm(bias, x.view(1, 7, 4, 7, 4).permute(0, 1, 3, 2, 4).reshape(49, 16), w.view(64, 16).t()),
                "mm 49x64x64": lambda: a[0] @ a[0, :64].t()}.items():
    print(name, round(t(f), 2), "us")
torch.set_num_threads(1)
print("1 thread gelu", round(t(lambda: F.gelu(a)), 2), "conv", round(t(lambda: F.conv2d(x, w, bias, stride=4)), 2))
torch.set_num_threads(2)
with torch.backends.mkldnn.flags(enabled=False):
    print("no-mkldnn gelu 49x64", round(t(lambda: F.gelu(a)), 2), "49x16", round(t(lambda: F.gelu(c)), 2), "conv", round(t(lambda: F.conv2d(x, w, bias, stride=4)), 2))
big = torch.randn(1, 197, 192)
print("gelu 197x192", round(t(lambda: F.gelu(big)), 2))
with torch.backends.mkldnn.flags(enabled=False):
    print("no-mkldnn gelu 197x192", round(t(lambda: F.gelu(big)), 2))
    r1 = F.gelu(big)
r0 = F.gelu(big)
print("equal", torch.equal(r0, r1), (r0 - r1).abs().max().item())
x224 = torch.randn(1, 3, 224, 224); w224 = torch.randn(192, 3, 16, 16); b224 = torch.randn(192)
print("conv vim-t", round(t(lambda: F.conv2d(x224, w224, b224, stride=16), 300), 2))
with torch.backends.mkldnn.flags(enabled=False):
    print("no-mkldnn conv vim-t", round(t(lambda: F.conv2d(x224, w224, b224, stride=16), 300), 2))
