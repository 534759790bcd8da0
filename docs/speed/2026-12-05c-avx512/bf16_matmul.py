"""x_proj / dt_proj shapes of Vim-S under CPU bf16 autocast, 2 threads: F.linear as autocast runs it (casting the
float32 weight every call), on a bf16 copy of the weight, and the float32 panel after casting x: median µs of 300
calls. Usage: python bf16_matmul.py"""
import time, torch
from dyvm.kernels import mix_cpp, scan_cpp
assert scan_cpp.available()
torch.set_num_threads(2)
def med(f, n=300):
    for _ in range(30): f()
    ts=[]
    for _ in range(n):
        t=time.perf_counter_ns(); f(); ts.append(time.perf_counter_ns()-t)
    return sorted(ts)[n//2]/1e3
for (k, n) in ((768, 56), (24, 768)):
    w = torch.randn(n, k); pan = mix_cpp.weight_panel(w)
    for rows in (197, 137, 96, 67):
        x = torch.randn(rows, k)
        xb = x.bfloat16()
        def auto():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return torch.nn.functional.linear(xb, w)
        wb = w.bfloat16()
        a = med(auto); b = med(lambda: torch.nn.functional.linear(xb, wb)); c = med(lambda: mix_cpp.panel_linear(xb.float(), pan, n))
        print(f"{k}->{n} rows {rows}: autocast {a:.1f}  bf16 cached weight {b:.1f}  fp32 panel (+cast of x) {c:.1f} µs")
