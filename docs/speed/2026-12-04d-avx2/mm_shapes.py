import time, torch
torch.set_num_threads(2)
M = 6400
shapes = {  # name: (a shape, b shape) for a @ b
 "in_proj fwd": ((M, 64), (64, 256)), "in_proj dX": ((M, 256), (256, 64)), "in_proj dW": ((256, M), (M, 64)),
 "x_proj fwd": ((M, 128), (128, 36)), "x_proj dX": ((M, 36), (36, 128)), "x_proj dW": ((36, M), (M, 128)),
 "dt_proj fwd": ((M, 4), (4, 128)), "dt_proj dX(T)": ((4, 128), (128, M)), "dt_proj dW": ((4, M), (M, 128)),
 "out_proj fwd": ((M, 128), (128, 64)), "out_proj dX": ((M, 64), (64, 128)), "out_proj dW": ((64, M), (M, 128)),
}
res = {}
for name, (sa, sb) in shapes.items():
    a = torch.randn(*sa); b = torch.randn(*sb)
    if "dW" in name: a = torch.randn(sa[1], sa[0]).t()  # transposed view, as autograd passes
    for _ in range(3): a @ b
    ts = []
    for _ in range(30):
        t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
    ts.sort(); med = ts[15]
    fl = 2 * sa[0] * sa[1] * sb[1]
    print("%-16s %8.3f ms  %6.1f GFLOP/s" % (name, med * 1e3, fl / med / 1e9))
