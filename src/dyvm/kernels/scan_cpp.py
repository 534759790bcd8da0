"""Compiled CPU selective scan (``csrc/selective_scan.cpp``), built on first use.

The same extension also holds the causal conv1d kernels (wrapped in ``conv_cpp``), so
:func:`available` / :func:`build_error` describe both.

The extension is compiled with ``torch.utils.cpp_extension.load`` (g++ -O3 -march=native,
OpenMP) the first time :func:`available` or :func:`selective_scan_cpp` is called, once per
process (thread-safe), and cached on disk. The extension name carries a hash of the source,
the compile flags, the torch/Python versions and the CPU's model and feature flags, so a
cached build is never reused on a different CPU or with a different torch. The cache lives
in ``$DYVM_EXT_DIR`` when set, else in torch's default extension directory
(``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``).

If the compiler rejects ``-march=native`` or OpenMP, the build is retried without them (the
kernel is then portable / single-threaded); :func:`build_error` reports the first failure.

float32 and float64 are supported. The fast path is float32 with N = 16 on AVX-512 CPUs (one
state per vector register) and on AVX2 CPUs (two registers); other N, float64 (meant for gradcheck)
and CPUs with neither use a generic, compiler-vectorised path (about 3x slower on AVX-512 hardware;
on a Zen 3 AVX2 core the fast path makes the demo's Vim step 1.37x as fast, docs/speed/log.md, "Two machine kinds").
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from .custom_ops import to_layout

EXT_DIR_VAR = "DYVM_EXT_DIR"
# extra compiler flags for every build attempt, e.g. "-mno-avx512f" to build what an AVX2 CPU runs
EXTRA_CFLAGS_VAR = "DYVM_EXT_CFLAGS"
_SOURCE = Path(__file__).resolve().parent / "csrc" / "selective_scan.cpp"
# (cflags, ldflags) to try in order: the first is the real one; the others only serve
# compilers that reject -march=native or OpenMP (without OpenMP the kernel is single-threaded).
# Never -ffast-math: the kernel's exp relies on IEEE rounding.
_COMMON = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
# On x86, 512-bit vectors for the compiler's own loops where the CPU has them (GCC's -march=native prefers 256 bits
# on Intel): the scan's softplus and gate passes run 16 lanes at a time like its hand-written recurrence
# (docs/speed/2026-12-03b-intel). Ignored on CPUs without AVX-512.
_NATIVE = ["-march=native"] + (["-mprefer-vector-width=512"] if platform.machine().lower() in ("x86_64", "amd64")
                               else [])
_FLAG_SETS = (
    (_COMMON + _NATIVE + ["-fopenmp"], ["-fopenmp"]),
    (_COMMON + ["-fopenmp"], ["-fopenmp"]),
    (_COMMON, []),
)

_lock = threading.Lock()
_tried = False
_module = None
_error = ""
_seconds: Optional[float] = None


def _cpu_fingerprint() -> str:
    """Model name and feature flags of this CPU (what -march=native compiles for)."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            seen = set()
            for line in fh:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part") and key not in seen:
                    seen.add(key)
                    parts.append(line.strip())
    except OSError:
        pass
    return "\n".join(parts)


def _extension_name(cflags, ldflags) -> str:
    h = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), " ".join(cflags + ldflags).encode(),
                 torch.__version__.encode(), sys.version.encode(),
                 os.environ.get("CXX", "c++").encode(), _cpu_fingerprint().encode()):
        h.update(part)
        h.update(b"\0")
    return "dyvm_selective_scan_" + h.hexdigest()[:16]


def _import_cpp_extension():
    # its import logs "No CUDA runtime is found" on CPU-only machines: irrelevant here
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        log.setLevel(level)
    return cpp_extension


def _build_one(cflags, ldflags):
    cpp_extension = _import_cpp_extension()
    name = _extension_name(cflags, ldflags)
    build_dir = None
    root = os.environ.get(EXT_DIR_VAR)
    if root:
        build_dir = os.path.join(os.path.expanduser(root), name)
        os.makedirs(build_dir, exist_ok=True)
    # a plain library registering torch.ops.dyvm_scan.{forward,backward,conv_forward,
    # conv_backward} (no pybind11: the
    # build is much faster without torch/extension.h)
    cpp_extension.load(name=name, sources=[str(_SOURCE)], extra_cflags=list(cflags),
                       extra_ldflags=list(ldflags), build_directory=build_dir, verbose=False,
                       is_python_module=False)
    return torch.ops.dyvm_scan


def _build():
    first_error = None
    extra = shlex.split(os.environ.get(EXTRA_CFLAGS_VAR, ""))
    for cflags, ldflags in _FLAG_SETS:
        try:
            return _build_one(cflags + extra, ldflags)
        except Exception as exc:  # compiler missing or failing, ninja missing, ...
            if first_error is None:
                first_error = exc
    raise first_error


def _load():
    """The compiled module, or None (after the first call, without locking)."""
    global _tried, _module, _error, _seconds
    if _tried:
        return _module
    with _lock:
        if not _tried:
            start = time.perf_counter()
            try:
                _module = _build()
            except Exception as exc:  # (the first flag set's failure)
                _error = f"{type(exc).__name__}: {str(exc).strip()[:2000]}"
                _module = None
            _seconds = time.perf_counter() - start
            _tried = True
    return _module


def available() -> bool:
    """Whether the kernel builds (or loads from the cache) here; tries once per process."""
    return _load() is not None


def loaded() -> bool:
    """Whether the kernel is already loaded in this process (a plain read: no build, no lock; safe while tracing)."""
    return _module is not None


def build_error() -> str:
    """Why the kernel is unavailable ('' when it built or has not been tried)."""
    _load()
    return _error


SIMD_PATHS = {512: "avx512", 256: "avx2", 0: "generic"}


def simd_path() -> Optional[str]:
    """The float N = 16 fast path the build compiled: "avx512", "avx2" or "generic" (none; every call
    takes the generic path); None when the kernel is unavailable."""
    module = _load()
    return None if module is None else SIMD_PATHS[int(module.simd_path())]


def lanes_kernels() -> Optional[bool]:
    """Whether the build has the kernels with 16 channels in the vector lanes (AVX-512, or AVX2 as two 8-lane
    halves), which serve channel-last float rows of 16 states in whole blocks of 16 channels (the mixer's
    layout) up to L = 512 (on AVX2 the backward up to L = 64); None when the kernel is unavailable."""
    module = _load()
    return None if module is None else bool(module.lanes_kernels())


def set_flush_denormal(on: bool) -> bool:
    """Flush denormal floats to zero (FTZ and DAZ) on this thread and on every thread of torch's intra-op pool,
    or stop; returns whether this thread flushed them before. (``torch.set_flush_denormal`` sets the calling
    thread only, and the pool's threads run most of a step.) Without the kernel: ``torch.set_flush_denormal``,
    and False. The extension's comment says why training wants it."""
    module = _load()
    if module is None:
        torch.set_flush_denormal(on)
        return False
    return bool(module.set_flush_denormal(on))


def build_seconds() -> Optional[float]:
    """Seconds the first-use build (or cache load) took; None before the first attempt."""
    return _seconds


def _channels_last(u: Tensor) -> bool:
    """Whether u (B, E, L) is channel-last memory: outputs are then allocated channel-last too."""
    return u.dim() == 3 and u.shape[1] > 1 and u.stride(1) == 1


def _prepare(u, delta, A, B, C, D, z, delta_bias):
    if u.device.type != "cpu":
        raise ValueError(f"scan backend 'cpp' needs CPU tensors; got u on {u.device}")
    dtype = u.dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"scan backend 'cpp' computes in float32/float64; got {dtype}")
    for name, t in (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("delta_bias", delta_bias)):
        if t is not None and (t.dtype != dtype or t.device.type != "cpu"):
            raise TypeError(f"scan backend 'cpp': {name} is {t.dtype} on {t.device}, "
                            f"expected {dtype} on cpu like u")

    def c(t):
        return None if t is None else t.contiguous()

    def bc(t):  # (B, N, L) -> (B, L, N) view; the kernel needs unit stride over N only
        t = t.transpose(1, 2)
        return t if t.stride(2) == 1 or t.shape[2] == 1 else t.contiguous()

    # u, delta, z are read through their strides (no copies of the mixer's channel-last views)
    return (u, delta, c(A), bc(B), bc(C), c(D), z, c(delta_bias))


class _SelectiveScanCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
        args = _prepare(u, delta, A, B, C, D, z, delta_bias)
        cl = _channels_last(u)
        out = _module.forward(*args, bool(delta_softplus), bool(reverse), cl)
        ctx.save_for_backward(*args)
        ctx.delta_softplus, ctx.reverse, ctx.channels_last = bool(delta_softplus), bool(reverse), cl
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        args = ctx.saved_tensors
        grad_out = grad_out.to(args[0].dtype)
        du, ddelta, dA, dBt, dCt, dD, dz, dbias = _module.backward(grad_out, *args, ctx.delta_softplus,
                                                                    ctx.reverse, ctx.channels_last)
        return (du, ddelta, dA, dBt.transpose(1, 2), dCt.transpose(1, 2),
                dD if args[5] is not None else None, dz if args[6] is not None else None,
                dbias if args[7] is not None else None, None, None)


def influence_terms(u: Tensor, delta: Tensor, dt_bias: Tensor, a: Tensor, b: Tensor, c: Tensor, position: int,
                    backward: bool) -> Optional[Tensor]:
    """One SSM direction's terms of the class-token influence at ``position`` (B, L, E): Δ u Σ_n C_pos B_j
    exp(A span), 0 for tokens that do not reach it; u, delta (before bias and softplus) (B, L, E), dt_bias (E),
    A (E, N), B, C (B, L, N). The extension's one pass on CPU tensors where it is built, else None."""
    if _load() is None or u.device.type != "cpu":
        return None
    return _module.influence_terms(u.float(), delta.float(), dt_bias.float(), a.float(), b.float(), c.float(),
                                   int(position), bool(backward))


def weight_grad_applies(rows: int) -> bool:
    """Whether :func:`weight_grad` splits a product of ``rows`` rows across the threads (else it is one ``mm``)."""
    return rows >= 2048 and torch.get_num_threads() > 1 and _load() is not None


def weight_grad(grad: Tensor, x: Tensor) -> Tensor:
    """A Linear's weight gradient grad (M, out)^T · x (M, in) → (out, in), float32 CPU: the extension's
    ``weight_grad`` (the rows split across the threads, partials summed in thread order) where it is built, else
    ``torch.mm``."""
    if _load() is None:
        return torch.mm(grad.t(), x)
    return _module.weight_grad(grad, x)


def _x_proj_backward(d_dbl: Tensor, u: Tensor, du: Tensor, x_proj_weight: Tensor) -> Tensor:
    """x_proj's backward in a training node: d_dbl (M, R + 2N) the gradient of its output, u and du (B, E, L)
    channel-last its input and the scan's gradient of it → x_proj's weight gradient (R + 2N, E); d_dbl · W_x is added
    into du in place (``addmm_``), where autograd would sum the two in a separate pass over (B, E, L)."""
    channels = u.shape[1]
    d_weight = weight_grad(d_dbl, u.transpose(1, 2).view(-1, channels))
    du.transpose(1, 2).view(-1, channels).addmm_(d_dbl, x_proj_weight)
    return d_weight


class _SSMBranchCpp(torch.autograd.Function):
    """x_proj → (Δ via dt_proj, B, C) → scan for one direction, as one node (float32, channel-last u).

    Where the lanes kernels serve the call, dt_proj runs inside them (``forward_dt`` / ``backward_dt``): Δ is
    computed per step from x_proj's first R columns and never stored, and the backward returns dt's and dt_proj's
    gradients instead of Δ's (docs/speed/log.md, "dt_proj inside the training scan").

    Its backward writes the gradient of x_proj's output into one (M, R + 2N) buffer (autograd's narrows
    zero-fill and sum three) and adds x_proj's input gradient into the scan's du in place (``addmm_``),
    where autograd would sum the two in a separate pass over (B, E, L).

    Under CPU autocast the two projections stay float32 here (as at inference: ``BiMambaMixer.all_panels``): the
    scan reads float32 anyway, and 16-bit products R + 2N and E wide would cost casts of u and Δ both ways."""

    @staticmethod
    @torch.autocast("cpu", enabled=False)
    def forward(ctx, u, x_proj_weight, dt_proj_weight, dt_bias, A, D, z, d_state, reverse):
        batch, channels, length = u.shape
        rank = dt_proj_weight.shape[1]
        u2 = u.transpose(1, 2).view(batch * length, channels)          # u is channel-last (else view() raises)
        x_dbl = torch.mm(u2, x_proj_weight.t())                           # (M, R + 2N)
        bc = x_dbl.view(batch, length, -1)
        B, C = bc[..., rank:rank + d_state].transpose(1, 2), bc[..., rank + d_state:].transpose(1, 2)
        # dt_proj inside the scan where the lanes kernels serve the call: Δ (B, E, L) and its gradient never
        # go through memory, and the product only R = 4-24 wide is not a GEMM call of its own
        ctx.dt_inside = _module.lanes_dt_applies(u, A, z)
        if ctx.dt_inside:
            dt_proj_weight = dt_proj_weight.contiguous()
            args = _prepare(u, u, A, B, C, D, z, dt_bias)                 # (u stands in for Δ: not read)
            out = _module.forward_dt(u, bc[..., :rank], dt_proj_weight, *args[2:], bool(reverse))
        else:
            delta = torch.mm(x_dbl[:, :rank], dt_proj_weight.t()).view(batch, length, channels).transpose(1, 2)
            args = _prepare(u, delta, A, B, C, D, z, dt_bias)
            out = _module.forward(*args, True, bool(reverse), True)
        ctx.save_for_backward(x_dbl, x_proj_weight, dt_proj_weight, *args)
        ctx.reverse, ctx.rank, ctx.d_state = bool(reverse), rank, d_state
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    @torch.autocast("cpu", enabled=False)
    def backward(ctx, grad_out):
        x_dbl, x_proj_weight, dt_proj_weight, *args = ctx.saved_tensors
        u, dt = args[0], x_dbl[:, :ctx.rank]
        batch, channels, length = u.shape
        rank, n = ctx.rank, ctx.d_state
        if ctx.dt_inside:
            grad_out = to_layout(grad_out.to(u.dtype), channels_last=True)   # the lanes kernels read channel-last
            # the kernels write x_proj's output gradient (dt, B, C columns) straight into its (B, L, R + 2N) rows
            du, d_dbl, dA, dD, dz, dbias, d_dt_weight, _ = _module.backward_dt(
                grad_out, u, x_dbl.view(batch, length, -1)[..., :rank], dt_proj_weight, *args[2:], ctx.reverse)
            d_dbl = d_dbl.view(-1, rank + 2 * n)                          # (M, R + 2N)
        else:
            du, ddelta, dA, dB, dC, dD, dz, dbias = _module.backward(grad_out.to(u.dtype), *args, True, ctx.reverse,
                                                                    True)
            dd2 = ddelta.transpose(1, 2).view(-1, channels)              # (M, E) views (channel-last, like u)
            d_dbl = torch.empty_like(x_dbl)                               # (M, R + 2N)
            # an output R wide is slow for the CPU GEMM: the transposed product, then a narrow copy (as narrow_linear)
            d_dbl[:, :rank] = torch.mm(dt_proj_weight.t(), dd2.t()).t()
            d_dt_weight = torch.mm(dt.t(), dd2).t()
            d_dbl[:, rank:rank + n] = dB.reshape(-1, n)
            d_dbl[:, rank + n:] = dC.reshape(-1, n)
        d_x_weight = _x_proj_backward(d_dbl, u, du, x_proj_weight)
        return (du, d_x_weight, d_dt_weight, dbias if args[7] is not None else None, dA,
                dD if args[5] is not None else None, dz if args[6] is not None else None, None, None)


class _BiSSMCpp(torch.autograd.Function):
    """Both SSM directions of a mixer after ``in_proj`` (conv + SiLU, x_proj, dt_proj inside the scan, the gated
    scan), for training: xz (B, L, 2E) float32, mask (B, L) 0/1 float32 or None (DyVM's keep mask, applied by the
    convs, with its gradient), gates (B, 2) [forward, backward] or None → y_f g_f + y_b g_b (B, E, L) channel-last
    (y_f + y_b without gates).

    As one node the second direction's scan adds its output into the first's in its stores (each times its per-image
    gate there), and the backward writes both directions' x and z gradients into one (B, L, 2E) buffer, the second
    direction's conv and scan kernels adding theirs in their stores, with the gates' gradients summed in the scan's
    backward: no (B, E, L) passes of their own for the directions' sum, their gating, split_xz's two sums or the gates'
    dot products. Only where the lanes kernels serve both directions (:func:`bi_ssm_cpp_applies`). params: per
    direction conv weight (E, 1, K), conv bias (E), x_proj weight (R + 2N, E), dt_proj weight (E, R), dt_proj bias
    (E), A (E, N), D (E), forward direction first."""

    @staticmethod
    @torch.autocast("cpu", enabled=False)
    def forward(ctx, xz, mask, gates, d_state, *params):
        batch, length, two_e = xz.shape
        channels = two_e // 2
        x, z = xz[..., :channels].transpose(1, 2), xz[..., channels:].transpose(1, 2)   # channel-last views
        y, saved, ctx.shapes = None, [xz], []
        scales = (None, None) if gates is None else gates.detach().float().t().contiguous()      # (2, B)
        for reverse, (conv_w, conv_b, x_w, dt_w, dt_bias, A, D) in ((False, params[:7]), (True, params[7:])):
            rank = dt_w.shape[1]
            w = conv_w.reshape(channels, -1).contiguous()
            u = _module.conv_forward(x, w, conv_b, True, mask, reverse, True)               # (B, E, L) channel-last
            x_dbl = torch.mm(u.transpose(1, 2).view(-1, channels), x_w.t()).view(batch, length, -1)
            scan_args = (u, x_dbl[..., :rank], dt_w.contiguous(), A.contiguous(), x_dbl[..., rank:rank + d_state],
                         x_dbl[..., rank + d_state:], D.contiguous(), z, dt_bias.contiguous())
            if y is None:
                y = _module.forward_dt(*scan_args, reverse, scales[0])
            else:
                _module.forward_dt_add_(y, *scan_args, reverse, scales[1])                  # y_f + y_b in the stores
            saved += [w, conv_b, x_w, *scan_args[:4], scan_args[6], scan_args[8], x_dbl]
            ctx.shapes.append(conv_w.shape)
        ctx.save_for_backward(*saved, *(() if gates is None else (scales,)), *(() if mask is None else (mask,)))
        ctx.d_state, ctx.gates_dtype, ctx.masked = d_state, None if gates is None else gates.dtype, mask is not None
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    @torch.autocast("cpu", enabled=False)
    def backward(ctx, grad_out):
        xz, *saved = ctx.saved_tensors
        scales = saved[20] if ctx.gates_dtype is not None else (None, None)
        mask = saved[-1] if ctx.masked else None
        mask_grad = ctx.masked and ctx.needs_input_grad[1]
        channels, n = xz.shape[-1] // 2, ctx.d_state
        grad_out = to_layout(grad_out.to(xz.dtype), channels_last=True)
        d_xz = torch.empty_like(xz)                                         # both directions' x and z gradients
        x, z = xz[..., :channels].transpose(1, 2), xz[..., channels:].transpose(1, 2)
        dx, dz = d_xz[..., :channels].transpose(1, 2), d_xz[..., channels:].transpose(1, 2)
        grads, d_gates, d_mask = [], [], None
        for i, reverse in enumerate((False, True)):
            w, conv_b, x_w, u, dt, dt_w, A, D, dt_bias, x_dbl = saved[10 * i:10 * (i + 1)]
            rank = dt_w.shape[1]
            du, d_dbl, dA, dD, _, dbias, d_dt_w, d_gate = _module.backward_dt(
                grad_out, u, dt, dt_w, A, x_dbl[..., rank:rank + n], x_dbl[..., rank + n:], D, z, dt_bias, reverse,
                dz, i > 0, scales[i])
            d_gates.append(d_gate)
            d_x_w = _x_proj_backward(d_dbl.view(-1, rank + 2 * n), u, du, x_w)
            _, d_conv_w, d_conv_b, dm = _module.conv_backward(du, x, w, conv_b, True, mask, reverse, True, mask_grad,
                                                              dx, i > 0)
            if mask_grad:
                d_mask = dm if d_mask is None else d_mask.add_(dm)
            grads += [d_conv_w.reshape(ctx.shapes[i]), d_conv_b, d_x_w, d_dt_w, dbias, dA, dD]
        d_gates = None if ctx.gates_dtype is None else torch.stack(d_gates, 1).to(ctx.gates_dtype)
        return (d_xz, d_mask, d_gates, None, *grads)


def bi_ssm_cpp_applies(xz: Tensor, params: list[Tensor], d_state: int, gates: Optional[Tensor] = None,
                       mask: Optional[Tensor] = None) -> bool:
    """Whether :func:`bi_ssm_cpp` serves these tensors: float32 CPU, the lanes kernels for both directions (E a
    multiple of 16, L <= 512, 16 states), gates (B, 2) on the CPU or None, mask (B, L) float32 on the CPU or None,
    the extension built."""
    if (xz.dim() != 3 or xz.dtype != torch.float32 or xz.device.type != "cpu" or not xz.is_contiguous()
            or d_state != 16 or len(params) != 14 or _load() is None):
        return False
    if gates is not None and (tuple(gates.shape) != (xz.shape[0], 2) or gates.device.type != "cpu"
                              or not gates.is_floating_point()):
        return False
    if mask is not None and (tuple(mask.shape) != tuple(xz.shape[:2]) or mask.dtype != torch.float32
                             or mask.device.type != "cpu"):
        return False
    if any(p is None or p.dtype != torch.float32 or p.device.type != "cpu" for p in params):
        return False
    z = xz[..., xz.shape[-1] // 2:].transpose(1, 2)                       # stands in for u: the same layout rule
    return bool(_module.lanes_dt_applies(z, params[5], z)) and params[12].shape == params[5].shape


def bi_ssm_cpp(xz: Tensor, params: list[Tensor], d_state: int, gates: Optional[Tensor] = None,
               mask: Optional[Tensor] = None) -> Tensor:
    """Both SSM directions of a mixer after ``in_proj``, for training (:class:`_BiSSMCpp`): xz (B, L, 2E), gates
    (B, 2) or None, mask (B, L) or None → y_f g_f + y_b g_b (B, E, L) channel-last; the same values as two
    :func:`ssm_branch_cpp` calls after their (masked) convs, gated and summed (gates of 0 and 1, the routers'; others
    up to float rounding)."""
    return _BiSSMCpp.apply(xz, mask, gates, d_state, *params)


def ssm_branch_cpp(u: Tensor, x_proj_weight: Tensor, dt_proj_weight: Tensor, dt_bias: Tensor, A: Tensor,
                   D: Tensor, z: Tensor, d_state: int, reverse: bool) -> Tensor:
    """One SSM direction after its conv, for training: u (B, E, L) channel-last float32 → the scan's output
    (B, E, L), channel-last; x_proj (R + 2N, E) and dt_proj (E, R) weights without bias (dt_bias goes into the
    scan, with softplus). The same values as ``F.linear`` + split + ``narrow_linear`` + the ``cpp`` scan."""
    return _SSMBranchCpp.apply(u, x_proj_weight, dt_proj_weight, dt_bias, A, D, z, d_state, reverse)


def selective_scan_cpp(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                       delta_bias: Optional[Tensor] = None, delta_softplus: bool = True,
                       reverse: bool = False) -> Tensor:
    """Selective scan with the compiled CPU kernel; float32/float64 CPU tensors, (B, E, L), any strides.

    reverse: run the recurrence from the last time step to the first (the result is in the
    original time order; equals flipping every time axis around the forward scan). The output
    (and the gradients of u, delta, z) are channel-last (B, L, E) memory when u is.
    """
    if _load() is None:
        raise RuntimeError(f"the C++ scan kernel is unavailable: {_error}")
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _SelectiveScanCpp.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    return _module.forward(*_prepare(*tensors), bool(delta_softplus), bool(reverse), _channels_last(u))
