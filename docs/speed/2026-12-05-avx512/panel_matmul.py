"""x (rows, in) · W (out, in)^T three ways, interleaved rounds in one process: MKL's sgemm (torch.mm), oneDNN on a
weight packed once (dyvm_scan::linear with a pack, forced), and the panel kernel (dyvm_scan::panel_linear).
Prints median µs per call and the ratios panel/sgemm, panel/oneDNN. Usage: python panel_matmul.py THREADS"""
import statistics
import sys
import time

import torch

from dyvm.kernels import mix_cpp, scan_cpp

torch.set_num_threads(int(sys.argv[1]))
assert scan_cpp.available()
shapes = [(384, 44), (12, 384), (192, 768), (384, 192), (64, 256), (128, 64), (128, 36), (4, 128)]
rows_list = [1, 2, 8, 15, 50, 197, 800, 3200]


def per_call(f, target=0.02):
    n, t0 = 1, time.perf_counter()
    f()
    once = max(time.perf_counter() - t0, 1e-6)
    n = max(1, int(target / once))
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n * 1e6


print(f"threads {sys.argv[1]}; median µs of 5 interleaved rounds; ratios < 1: the panel is faster")
print(f"{'in->out':>9} {'rows':>5} {'sgemm':>9} {'oneDNN':>9} {'panel':>9} {'pan/sgemm':>9} {'pan/dnn':>8}")
with torch.inference_mode():
    for k, n in shapes:
        w = torch.randn(n, k)
        packed, panel = mix_cpp.pack_weight(w), mix_cpp.weight_panel(w)
        for rows in rows_list:
            x = torch.randn(rows, k)
            fs = {"sgemm": lambda: torch.mm(x, w.t()),
                  "dnn": lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], None),
                  "panel": lambda: mix_cpp.panel_linear(x, panel, n)}
            times = {key: [] for key in fs}
            for _ in range(5):
                for key, f in fs.items():
                    times[key].append(per_call(f))
            med = {key: statistics.median(v) for key, v in times.items()}
            print(f"{k:>4}->{n:<4} {rows:>5} {med['sgemm']:9.1f} {med['dnn']:9.1f} {med['panel']:9.1f} "
                  f"{med['panel'] / med['sgemm']:9.2f} {med['panel'] / med['dnn']:8.2f}")
