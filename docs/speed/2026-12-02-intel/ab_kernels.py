"""One process, interleaved: this build's C++ kernels against another build's, at the demo's training shape.

Usage: python ab_kernels.py THREADS BATCH LENGTH ROUNDS REF_CHECKOUT
The other build's selective_scan.cpp is compiled under another op namespace (dyvm_scan_ref) into a temporary
folder, so both sets of kernels run in this process, alternating which goes first in each round; each arm times
5 calls per round. Shape: E 128 channels, N 16 states (the demo's D 64, expand 2), u / delta / z channel-last
views as the mixer passes them. Prints new/ref time: median and IQR of the per-round ratios, and the largest
absolute difference of each backward output.
"""
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils import cpp_extension

from dyvm.kernels import scan_cpp

threads, batch, length, rounds, ref = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
scan_cpp._load()
src = (Path(ref) / "src/dyvm/kernels/csrc/selective_scan.cpp").read_text()
src = src.replace("TORCH_LIBRARY(dyvm_scan,", "TORCH_LIBRARY(dyvm_scan_ref,").replace(
    "TORCH_LIBRARY_IMPL(dyvm_scan,", "TORCH_LIBRARY_IMPL(dyvm_scan_ref,")
build = Path(tempfile.mkdtemp(prefix="dyvm-ab-"))
(build / "ref.cpp").write_text(src)
cpp_extension.load(name="dyvm_ab_ref", sources=[str(build / "ref.cpp")], build_directory=str(build),
                   extra_cflags=["-O3", "-fno-math-errno", "-fno-trapping-math", "-march=native", "-fopenmp"],
                   extra_ldflags=["-fopenmp"], is_python_module=False)
new, old = torch.ops.dyvm_scan, torch.ops.dyvm_scan_ref
torch.set_num_threads(threads)
E, N = 128, 16
torch.manual_seed(0)
xz = torch.randn(batch, length, 2 * E)
u, z = xz[..., :E].transpose(1, 2), xz[..., E:].transpose(1, 2)
delta = (torch.randn(batch, length, E) * 0.5).transpose(1, 2)
xdbl = torch.randn(batch, length, 4 + 2 * N)
Bm, Cm = xdbl[..., 4:4 + N].transpose(1, 2), xdbl[..., 4 + N:].transpose(1, 2)
A, D, bias = -torch.rand(E, N) - 0.5, torch.randn(E), torch.randn(E)
args = scan_cpp._prepare(u, delta, A, Bm, Cm, D, z, bias)
cl = scan_cpp._channels_last(u)
g = torch.randn(batch, length, E).transpose(1, 2)
w, cb = torch.randn(E, 4), torch.randn(E)
arms = {
    "scan backward": lambda m: m.backward(g, *args, True, False, cl),
    "scan backward (reverse)": lambda m: m.backward(g, *args, True, True, cl),
    "scan forward": lambda m: m.forward(*args, True, False, cl),
    "conv backward": lambda m: m.conv_backward(g, u, w, cb, True, None, False, True, False),
    "conv backward (reverse)": lambda m: m.conv_backward(g, u, w, cb, True, None, True, True, False),
    "conv forward": lambda m: m.conv_forward(u, w, cb, True, None, False, True),
}
print(f"threads {threads}, batch {batch}, length {length}, {rounds} rounds; ref {ref}")
for name, f in arms.items():
    a, b = f(new), f(old)
    a, b = (a, b) if isinstance(a, (list, tuple)) else ([a], [b])
    diff = max((p - q).abs().max().item() for p, q in zip(a, b) if p.numel())
    for m in (new, old):
        f(m)
    ratios = []
    for r in range(rounds):
        times = {}
        for m, label in ((new, "new"), (old, "ref")) if r % 2 == 0 else ((old, "ref"), (new, "new")):
            t = time.perf_counter()
            for _ in range(5):
                f(m)
            times[label] = time.perf_counter() - t
        ratios.append(times["new"] / times["ref"])
    q = statistics.quantiles(ratios, n=4)
    print(f"{name:24s} new/ref time: median {statistics.median(ratios):.3f}, IQR {q[0]:.3f}-{q[2]:.3f}; "
          f"largest output difference {diff:.2e}")
