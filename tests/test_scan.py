"""Selective-scan backends against a float64 run of the reference recurrence."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dyvm.kernels import scan as scan_mod
from dyvm.kernels import scan_cpp
from dyvm.kernels.scan import ENV_VAR, resolve_backend, selective_scan, selective_scan_reference
from dyvm.kernels.scan_torch import selective_scan_torch
from dyvm.utils import cpu_flags

CPP = scan_cpp.available()
BACKENDS_HERE = ["reference", "torch"] + (["cpp"] if CPP else [])
needs_cpp = pytest.mark.skipif(not CPP, reason=f"C++ scan kernel unavailable: {scan_cpp.build_error()}")
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(batch=2, channels=6, length=37, nstate=16, *, D=True, z=True, bias=True,
                softplus=True, big_decay=False, dtype=torch.float32, seed=0):
    """Leaf tensors (u, delta, A, B, C, D, z, delta_bias), None where absent, and the flag."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    u = rnd(batch, channels, length)
    if softplus:
        delta = 0.5 * rnd(batch, channels, length)
    else:  # Δ used as is: keep it positive and moderate
        delta = F.softplus(0.5 * rnd(batch, channels, length) - 1.0)
    a_log_max = 2.5 if big_decay else 1.0       # |A| up to e^2.5 ~ 12
    A = -torch.exp(a_log_max * torch.rand(channels, nstate, generator=g, dtype=torch.float64))
    Bm, Cm = rnd(batch, nstate, length), rnd(batch, nstate, length)
    Dv = rnd(channels) if D else None
    zz = rnd(batch, channels, length) if z else None
    if bias:
        # big_decay: Δ ~ softplus(3 + ...) ~ 3-4.5, so Δ|A| reaches ~50
        base = 3.0 if big_decay else -0.5
        db = base + 0.5 * torch.rand(channels, generator=g, dtype=torch.float64)
    else:
        db = None
    tensors = [t if t is None else t.to(dtype).requires_grad_() for t in
               (u, delta, A, Bm, Cm, Dv, zz, db)]
    return tensors, softplus


def run_with_grads(fn, tensors, softplus, grad_out):
    out = fn(*tensors, softplus)
    present = [t for t in tensors if t is not None]
    grads = torch.autograd.grad(out, present, grad_out.to(out.dtype))
    it = iter(grads)
    return out, [None if t is None else next(it) for t in tensors]


def fp64_reference(tensors, softplus, grad_out):
    t64 = [None if t is None else t.detach().double().requires_grad_() for t in tensors]
    return run_with_grads(selective_scan_reference, t64, softplus, grad_out.double())


CONFIGS = {
    "full": dict(),
    "bare": dict(D=False, z=False, bias=False),
    "no_softplus": dict(softplus=False),
    "no_softplus_bare": dict(softplus=False, D=False, z=False, bias=False),
    "big_decay": dict(big_decay=True),
    "long": dict(batch=1, channels=3, length=1100),
    # the AVX-512 backward keeps the decays up to 64 steps and recomputes them past that ("long" too)
    "past_decay_store": dict(batch=2, channels=3, length=65),
    "n8_odd": dict(batch=3, channels=5, length=17, nstate=8),
    # whole blocks of 16 channels: the lanes kernels where the rows are channel-last (AVX-512 and AVX2)
    "lanes": dict(batch=3, channels=32, length=37),
    "lanes_bare": dict(batch=2, channels=16, length=20, D=False, z=False, bias=False, softplus=False),
    "lanes_big_decay": dict(batch=2, channels=16, length=33, big_decay=True),
    "lanes_long": dict(batch=1, channels=16, length=300),
    "single_step": dict(batch=2, channels=4, length=1),
}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_matches_fp64_reference(backend, config):
    tensors, softplus = make_inputs(**CONFIGS[config])
    grad_out = torch.randn(tensors[0].shape, generator=torch.Generator().manual_seed(1))
    out, grads = run_with_grads(
        lambda *a: selective_scan(*a, backend=backend), tensors, softplus, grad_out)
    ref_out, ref_grads = fp64_reference(tensors, softplus, grad_out)

    assert out.dtype == torch.float32 and out.shape == tensors[0].shape
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    for name, t, g, rg in zip(NAMES, tensors, grads, ref_grads):
        if t is None:
            assert g is None
            continue
        assert g.shape == t.shape and torch.isfinite(g).all(), name
        torch.testing.assert_close(g.double(), rg, rtol=1e-4, atol=1e-5, msg=lambda m: f"d{name}: {m}")


def test_big_decay_really_is_big():
    """The large-decay case reaches Δ|A| ~ 50 (exp(ΔA) underflows towards 0)."""
    (u, delta, A, *_rest, db), _ = make_inputs(**CONFIGS["big_decay"])
    dA = F.softplus(delta + db[None, :, None])[..., None] * A[None, :, None, :].abs()
    assert dA.max() > 40


@pytest.mark.parametrize("block_elems", [200, 1000, 90], ids=["1step", "5steps", "split_batch"])
def test_torch_backend_blocking(monkeypatch, block_elems):
    """Small work blocks: many time blocks (state carried across them both ways) and, at 90,
    one batch element per block."""
    from dyvm.kernels import scan_torch

    monkeypatch.setitem(scan_torch._BLOCK_ELEMS, "cpu", block_elems)
    tensors, softplus = make_inputs(batch=3, channels=2, length=23, nstate=16)
    assert scan_torch._block_plan(3, 23, 2 * 16, torch.device("cpu"))[1] < 23
    grad_out = torch.randn(tensors[0].shape, generator=torch.Generator().manual_seed(2))
    out, grads = run_with_grads(selective_scan_torch, tensors, softplus, grad_out)
    ref_out, ref_grads = fp64_reference(tensors, softplus, grad_out)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    for name, g, rg in zip(NAMES, grads, ref_grads):
        torch.testing.assert_close(g.double(), rg, rtol=1e-4, atol=1e-5, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("backend", ["torch"] + (["cpp"] if CPP else []))
def test_no_grad_path_matches(backend):
    tensors, softplus = make_inputs(batch=2, channels=5, length=40)
    with_grad = selective_scan(*tensors, softplus, backend=backend)
    with torch.no_grad():
        without = selective_scan(*tensors, softplus, backend=backend)
    plain = [None if t is None else t.detach() for t in tensors]
    torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=0)
    torch.testing.assert_close(selective_scan(*plain, softplus, backend=backend), without,
                               rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch"] + (["cpp"] if CPP else []))
def test_non_contiguous_inputs(backend):
    tensors, softplus = make_inputs(batch=2, channels=4, length=23)
    u, delta, A, Bm, Cm, Dv, zz, db = [t.detach() for t in tensors]
    # same values, other memory layouts
    Bnc = Bm.transpose(1, 2).contiguous().transpose(1, 2)
    Cnc = Cm.transpose(1, 2).contiguous().transpose(1, 2)
    unc = torch.stack([u, u], dim=-1)[..., 0]
    znc = zz.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (Bnc.is_contiguous() or unc.is_contiguous() or znc.is_contiguous())
    got = selective_scan(unc, delta, A, Bnc, Cnc, Dv, znc, db, softplus, backend=backend)
    want = selective_scan(u, delta, A, Bm, Cm, Dv, zz, db, softplus, backend="reference")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _gradcheck(fn, **kw):
    tensors, softplus = make_inputs(batch=2, channels=3, length=7, nstate=4,
                                    dtype=torch.float64, **kw)
    present = [i for i, t in enumerate(tensors) if t is not None]

    def f(*xs):
        full = list(tensors)
        for i, x in zip(present, xs):
            full[i] = x
        return fn(*full, softplus)

    assert torch.autograd.gradcheck(f, [tensors[i] for i in present], eps=1e-6, atol=1e-6,
                                    rtol=1e-5)


@pytest.mark.parametrize("kw", [dict(), dict(D=False, z=False, bias=False, softplus=False)],
                         ids=["full", "bare"])
def test_gradcheck_torch(kw):
    _gradcheck(selective_scan_torch, **kw)


@needs_cpp
@pytest.mark.parametrize("kw", [dict(), dict(D=False, z=False, bias=False, softplus=False)],
                         ids=["full", "bare"])
def test_gradcheck_cpp(kw):
    _gradcheck(scan_cpp.selective_scan_cpp, **kw)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_low_precision_inputs(backend, dtype):
    tensors, softplus = make_inputs(batch=2, channels=4, length=29, dtype=dtype)
    out = selective_scan(*tensors, softplus, backend=backend)
    assert out.dtype == dtype
    # the state is fp32 whatever the input dtype: compare with fp32 on the same (rounded) values
    t32 = [None if t is None else t.detach().float() for t in tensors]
    want = selective_scan_reference(*t32, softplus)
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    torch.testing.assert_close(out.float(), want, rtol=tol, atol=tol)
    out.float().square().sum().backward()
    for name, t in zip(NAMES, tensors):
        if t is not None:
            assert t.grad is not None and t.grad.dtype == dtype, name
            assert torch.isfinite(t.grad.float()).all(), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_torch_backend_on_cuda():
    tensors, softplus = make_inputs(batch=2, channels=8, length=50)
    grad_out = torch.randn(tensors[0].shape)
    cuda = [None if t is None else t.detach().cuda().requires_grad_() for t in tensors]
    out, grads = run_with_grads(selective_scan_torch, cuda, softplus, grad_out.cuda())
    ref_out, ref_grads = fp64_reference(tensors, softplus, grad_out)
    torch.testing.assert_close(out.double().cpu(), ref_out, rtol=1e-5, atol=1e-5)
    for g, rg in zip(grads, ref_grads):
        if rg is not None:
            torch.testing.assert_close(g.double().cpu(), rg, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- backend selection


def _spy(monkeypatch):
    calls = []

    def fake_torch_impl(*args):
        calls.append(len(args))
        return selective_scan_reference(*args)

    monkeypatch.setitem(scan_mod._IMPLS, "torch", lambda: fake_torch_impl)
    return calls


def test_backend_from_env_var_read_at_call_time(monkeypatch):
    calls = _spy(monkeypatch)
    tensors, softplus = make_inputs(batch=1, channels=2, length=5)
    monkeypatch.setenv(ENV_VAR, "reference")
    selective_scan(*tensors, softplus)
    assert calls == []
    monkeypatch.setenv(ENV_VAR, "torch")
    selective_scan(*tensors, softplus)
    assert calls == [9]  # positional (u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    # the argument wins over the variable
    selective_scan(*tensors, softplus, backend="reference")
    assert calls == [9]


def test_backend_argument(monkeypatch):
    calls = _spy(monkeypatch)
    monkeypatch.delenv(ENV_VAR, raising=False)
    tensors, softplus = make_inputs(batch=1, channels=2, length=5)
    selective_scan(*tensors, softplus, backend="torch")
    assert calls == [9]
    assert resolve_backend("reference") == "reference"


def test_unknown_backend_names_its_source(monkeypatch):
    tensors, softplus = make_inputs(batch=1, channels=2, length=5)
    monkeypatch.setenv(ENV_VAR, "fastest")
    with pytest.raises(ValueError, match=ENV_VAR):
        selective_scan(*tensors, softplus)
    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(ValueError, match="backend") as info:
        selective_scan(*tensors, softplus, backend="fastest")
    assert ENV_VAR not in str(info.value)


def test_auto_on_cpu(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_backend(None, torch.device("cpu")) == ("cpp" if CPP else "torch")


# ----------------------------------------------------------------- the C++ extension


@needs_cpp
def test_cpp_build_is_cached_and_reported():
    seconds = scan_cpp.build_seconds()
    assert isinstance(seconds, float) and seconds > 0
    assert scan_cpp.build_error() == ""
    assert scan_cpp.available() and scan_cpp.build_seconds() == seconds  # no second build


@needs_cpp
def test_cpp_concurrent_calls():
    tensors, softplus = make_inputs(batch=2, channels=8, length=64)
    plain = [None if t is None else t.detach() for t in tensors]
    want = scan_cpp.selective_scan_cpp(*plain, softplus)
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = scan_cpp.selective_scan_cpp(*plain, softplus)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for r in results:
        torch.testing.assert_close(r, want, rtol=0, atol=0)


@needs_cpp
def test_cpp_rejects_bad_inputs():
    tensors, softplus = make_inputs(batch=1, channels=2, length=5)
    plain = [None if t is None else t.detach() for t in tensors]
    with pytest.raises(TypeError):
        scan_cpp.selective_scan_cpp(*[None if t is None else t.half() for t in plain], softplus)
    bad = list(plain)
    bad[3] = bad[3][:, :, :4]  # B with the wrong length
    with pytest.raises(RuntimeError):
        scan_cpp.selective_scan_cpp(*bad, softplus)


# ------------------------------------------------------------ reverse scan, strided inputs
TIME_AXIS = {0, 1, 3, 4, 6}  # u, delta, B, C, z


def _time_flipped(tensors):
    """New leaves with every time axis reversed."""
    return [None if t is None else (t.detach().flip(-1) if i in TIME_AXIS else t.detach()).requires_grad_()
            for i, t in enumerate(tensors)]


def _unflip(ref_out, ref_grads):
    """The fp64 forward reference on the original inputs, mapped to the time-flipped ones."""
    return ref_out.flip(-1), [None if g is None else (g.flip(-1) if i in TIME_AXIS else g)
                              for i, g in enumerate(ref_grads)]


@pytest.mark.parametrize("config", ["full", "bare", "no_softplus", "n8_odd", "single_step", "long"])
@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_reverse_matches_flipped_reference(backend, config):
    # the reverse scan of time-flipped inputs is the forward scan of the originals, flipped
    tensors, softplus = make_inputs(**CONFIGS[config])
    grad_out = torch.randn(tensors[0].shape, generator=torch.Generator().manual_seed(1))
    flipped = _time_flipped(tensors)
    out, grads = run_with_grads(lambda *a: selective_scan(*a, backend=backend, reverse=True), flipped, softplus,
                                grad_out.flip(-1))
    ref_out, ref_grads = _unflip(*fp64_reference(tensors, softplus, grad_out))
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    for name, t, g, rg in zip(NAMES, tensors, grads, ref_grads):
        if t is None:
            assert g is None
            continue
        torch.testing.assert_close(g.double(), rg, rtol=1e-4, atol=1e-5, msg=lambda m: f"d{name}: {m}")


@needs_cpp
def test_cpp_reverse_is_exactly_the_flipped_forward():
    tensors, softplus = make_inputs(batch=2, channels=5, length=29)
    plain = [None if t is None else t.detach() for t in tensors]
    f = lambda t: None if t is None else t.flip(-1)  # noqa: E731
    u, delta, A, Bm, Cm, Dv, zz, db = plain
    want = scan_cpp.selective_scan_cpp(f(u), f(delta), A, f(Bm), f(Cm), Dv, f(zz), db, softplus).flip(-1)
    got = scan_cpp.selective_scan_cpp(*plain, softplus, reverse=True)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def _channel_last_views(tensors):
    """The same values in the mixer's layouts: u, delta, z as (B, L, E) memory viewed as (B, E, L)
    (z a column slice of a wider (B, L, 2E) buffer), B and C column slices of one (B, L, R+2N) buffer."""
    u, delta, A, Bm, Cm, Dv, zz, db = tensors
    batch, channels, length = u.shape
    n = Bm.shape[1]

    def cl(t, extra=0):
        buf = torch.zeros(batch, length, channels + extra, dtype=t.dtype)
        buf[..., extra:] = t.detach().transpose(1, 2)
        return buf[..., extra:].transpose(1, 2).requires_grad_()

    xdbl = torch.zeros(batch, length, 3 + 2 * n, dtype=Bm.dtype)
    xdbl[..., 3:3 + n] = Bm.detach().transpose(1, 2)
    xdbl[..., 3 + n:] = Cm.detach().transpose(1, 2)
    Bv = xdbl[..., 3:3 + n].transpose(1, 2).requires_grad_()
    Cv = xdbl[..., 3 + n:].transpose(1, 2).requires_grad_()
    zv = None if zz is None else cl(zz, extra=channels)
    return [cl(u), cl(delta), A, Bv, Cv, Dv, zv, db]


@needs_cpp
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("config", ["full", "bare", "n8_odd", "lanes", "lanes_bare", "lanes_big_decay", "lanes_long"])
def test_cpp_channel_last_strided_inputs(config, reverse):
    tensors, softplus = make_inputs(**CONFIGS[config])
    grad_out = torch.randn(tensors[0].shape, generator=torch.Generator().manual_seed(1))
    ref_out, ref_grads = fp64_reference(tensors, softplus, grad_out)
    if reverse:
        tensors, grad_out = _time_flipped(tensors), grad_out.flip(-1)
        ref_out, ref_grads = _unflip(ref_out, ref_grads)
    views = _channel_last_views(tensors)
    assert views[0].stride(1) == 1 and views[3].stride(2) != 1
    out, grads = run_with_grads(lambda *a: selective_scan(*a, backend="cpp", reverse=reverse), views, softplus,
                                grad_out.transpose(1, 2).contiguous().transpose(1, 2))  # a channel-last grad too
    assert out.stride(1) == 1  # channel-last in, channel-last out
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    for name, t, g, rg in zip(NAMES, tensors, grads, ref_grads):
        if t is None:
            continue
        torch.testing.assert_close(g.double(), rg, rtol=1e-4, atol=1e-5, msg=lambda m: f"d{name}: {m}")


@needs_cpp
@pytest.mark.parametrize("kw", [dict(), dict(D=False, z=False, bias=False, softplus=False)], ids=["full", "bare"])
def test_gradcheck_cpp_reverse(kw):
    _gradcheck(lambda *a: scan_cpp.selective_scan_cpp(*a, reverse=True), **kw)


# ------------------------------------------------- the fast paths of other CPUs, built here


def _expected_simd_path(flags: set) -> str:
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "generic"


@needs_cpp
def test_cpp_builds_the_fast_path_this_cpu_can_run():
    # an AVX2 machine once ran the generic path, 2x slower, because the fast path needed AVX-512
    assert scan_cpp.simd_path() == _expected_simd_path(cpu_flags())


def check_sub_batches_match_python(autocast: bool = False) -> None:
    """Per-image branch selection at eager CPU inference: the extension's mixer, which reads a sub-batch's rows in
    place and adds its output in the scan's stores where the AVX-512 kernels serve (else copies the rows), gives the
    pure-PyTorch mixer's logits exactly (sub-batches of the routers' real per-image decisions, every combination of
    on / off / some images per direction, in float32 and under bf16 autocast)."""
    import dyvm
    from dyvm.models import vim as vim_module

    torch.manual_seed(0)
    model = dyvm.create_model("dyvm_vim_tiny", img_size=32, patch_size=4, depth=4, embed_dim=32, num_classes=5,
                              use_pruning=False).eval()
    for layer in model.layers:  # routers with real decisions: some branches off for some images
        torch.nn.init.normal_(layer.mixer.block_head.weight, std=0.5)
        torch.nn.init.zeros_(layer.mixer.block_head.bias)
    images = torch.randn(7, 3, 32, 32)
    stack, call = vim_module.VisionMamba.fused_stack, vim_module.BiMambaMixer.fused_call
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        fused = model.forward_inference(images)
        try:
            vim_module.VisionMamba.fused_stack = lambda *a, **k: None
            vim_module.BiMambaMixer.fused_call = lambda *a, **k: None
            python = model.forward_inference(images)
        finally:
            vim_module.VisionMamba.fused_stack, vim_module.BiMambaMixer.fused_call = stack, call
    some = ((fused.gates > 0.5).float().mean(1) % 1 > 0).sum()  # (layer, direction) pairs run by some images only
    assert some >= 2, "the routers made no per-image sub-batch"
    assert torch.equal(fused.gates, python.gates) and torch.equal(fused.logits, python.logits)


@needs_cpp
@pytest.mark.parametrize("autocast", [False, True])
def test_sub_batches_match_python(autocast):
    check_sub_batches_match_python(autocast)


_VARIANT_CHECK = """
import sys
sys.path.insert(0, {tests!r})
import test_scan as t
from dyvm.kernels import scan_cpp
for config in ("full", "bare", "no_softplus", "big_decay", "long", "n8_odd", "single_step"):
    t.test_matches_fp64_reference("cpp", config)
for config in ("full", "bare", "long"):
    t.test_reverse_matches_flipped_reference("cpp", config)
for config in ("full", "bare", "lanes", "lanes_bare", "lanes_long"):
    for reverse in (False, True):
        t.test_cpp_channel_last_strided_inputs(config, reverse)
t.check_sub_batches_match_python()
if scan_cpp.lanes_kernels():
    for rank, reverse in ((4, False), (12, True), (1, True)):
        t.check_scan_with_dt_proj_inside(rank, reverse)
    t.check_ops_into_given_outputs(4)
print(scan_cpp.lanes_kernels(), scan_cpp.simd_path())
"""


@needs_cpp
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 vector-extension flags")
@pytest.mark.parametrize("removed", [("avx512f",), ("avx512f", "avx2")], ids=["no-avx512", "no-avx2"])
def test_cpp_paths_of_smaller_cpus_match_reference(removed):
    # the kernel as an AVX2-only (or an older) CPU builds it, in a fresh process (one build per process),
    # through the parity tests above: every machine tests the paths it does not run itself
    flags = cpu_flags() - set(removed)
    env = dict(os.environ, DYVM_EXT_CFLAGS=" ".join(f"-mno-{f}" for f in removed))
    proc = subprocess.run([sys.executable, "-c", _VARIANT_CHECK.format(tests=str(Path(__file__).parent))],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.split()[-1] == _expected_simd_path(flags)
    assert proc.stdout.split()[-2] == str(_expected_simd_path(flags) != "generic")  # lanes with AVX-512 or AVX2


@needs_cpp
def test_lanes_kernels_where_a_fast_path_is():
    assert scan_cpp.lanes_kernels() == (scan_cpp.simd_path() in ("avx512", "avx2"))


@needs_cpp
def test_cpp_rows_kernels_still_match_reference():
    # the build without the lanes kernels (its N = 16 rows kernels serve every layout there), through the
    # same parity tests in a fresh process: both kernel pairs of an AVX-512 or AVX2 build stay tested
    # (on a CPU with neither this is the default build again)
    env = dict(os.environ, DYVM_EXT_CFLAGS="-DDYVM_LANES=0")
    proc = subprocess.run([sys.executable, "-c", _VARIANT_CHECK.format(tests=str(Path(__file__).parent))],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.split()[-2:] == ["False", _expected_simd_path(cpu_flags())]


def check_scan_with_dt_proj_inside(rank, reverse, batch=3, length=37, channels=32):
    """forward_dt / backward_dt (Δ = dt_proj(dt) computed inside the lanes kernels) against dt_proj as a product
    and the Δ-tensor ops: the same output and gradients up to float32 rounding (the R-term sums run in another
    order), dt's and dt_proj's gradients as the products of Δ's gradient."""
    ops = torch.ops.dyvm_scan
    g = torch.Generator().manual_seed(rank)

    def channel_last(*shape):  # (B, E, L) views of (B, L, E) memory, as the mixer hands them over
        return torch.randn(batch, length, channels, generator=g).transpose(1, 2)

    u, z, gout = channel_last(), channel_last(), channel_last()
    x_dbl = 0.5 * torch.randn(batch, length, rank + 32, generator=g)          # x_proj's output: dt, B, C
    dt, B, C = x_dbl[..., :rank], x_dbl[..., rank:rank + 16], x_dbl[..., rank + 16:]
    weight = torch.randn(channels, rank, generator=g) / rank ** 0.5
    A = -torch.rand(channels, 16, generator=g).mul(2.5).exp()
    D, bias = torch.randn(channels, generator=g), 0.5 * torch.randn(channels, generator=g)
    delta = (dt @ weight.t()).transpose(1, 2)                                   # (B, E, L) channel-last
    assert delta.stride(1) == 1 and ops.lanes_dt_applies(u, A, z)
    out = ops.forward_dt(u, dt, weight, A, B, C, D, z, bias, reverse)
    ref = ops.forward(u, delta, A, B, C, D, z, bias, True, reverse, True)
    assert out.stride(1) == 1
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    du, d_dbl, dA, dD, dz, dbias, dweight, dscale = ops.backward_dt(gout, u, dt, weight, A, B, C, D, z, bias, reverse)
    assert dscale.numel() == 0                                                  # no scale given
    assert d_dbl.shape == x_dbl.shape and d_dbl.is_contiguous()                # x_proj's output gradient, its rows
    ddt, dB, dC = d_dbl[..., :rank], d_dbl[..., rank:rank + 16], d_dbl[..., rank + 16:]
    rdu, rddelta, rdA, rdB, rdC, rdD, rdz, rdbias = ops.backward(gout, u, delta, A, B, C, D, z, bias, True, reverse,
                                                                 True)
    rddelta = rddelta.transpose(1, 2)                                           # (B, L, E)
    expected = (rdu, rddelta @ weight, rdA, rdB, rdC, rdD, rdz, rdbias,
                rddelta.reshape(-1, channels).t() @ dt.reshape(-1, rank))
    for name, got, want in zip(("du", "ddt", "dA", "dB", "dC", "dD", "dz", "dbias", "dweight"),
                               (du, ddt, dA, dB, dC, dD, dz, dbias, dweight), expected):
        assert got.shape == want.shape, name
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item(), msg=name)


@needs_cpp
@pytest.mark.skipif(not (CPP and scan_cpp.lanes_kernels()), reason="this build has no lanes kernels (tested in the "
                    "variant builds of test_cpp_paths_of_smaller_cpus_match_reference)")
@pytest.mark.parametrize("rank,reverse", [(4, False), (4, True), (12, False), (24, True), (1, False)])
def test_cpp_scan_with_dt_proj_inside_matches_the_delta_tensor_ops(rank, reverse):
    # the training node of one SSM direction (scan_cpp._SSMBranchCpp) runs dt_proj inside the lanes kernels:
    # demo R = 4, Vim-T 12, Vim-S 24
    check_scan_with_dt_proj_inside(rank, reverse)


@needs_cpp
@pytest.mark.skipif(not (CPP and scan_cpp.lanes_kernels()), reason="this build has no lanes kernels (tested in the "
                    "variant builds of test_cpp_paths_of_smaller_cpus_match_reference)")
def test_cpp_scan_with_dt_proj_inside_on_one_thread_and_several():
    # the backward splits the images across the threads (each a slab of dA, dD, dbias and dt_proj's gradient, summed
    # after; uneven splits too), or with fewer images than threads the channel blocks (each a slab of x_proj-output
    # rows, summed after); one thread writes single slabs: the same gradients every way
    threads = torch.get_num_threads()
    try:
        for n, batch in ((1, 3), (3, 3), (2, 5), (3, 1), (2, 1)):
            torch.set_num_threads(n)
            check_scan_with_dt_proj_inside(4, n == 3, batch=batch, channels=48)
    finally:
        torch.set_num_threads(threads)


@needs_cpp
@pytest.mark.skipif(not (CPP and scan_cpp.lanes_kernels()), reason="this build has no lanes kernels (tested in the "
                    "variant builds of test_cpp_paths_of_smaller_cpus_match_reference)")
@pytest.mark.parametrize("taps", [4, 3])
def test_cpp_ops_write_into_and_add_into_given_outputs(taps):
    # the training mixer's two-direction node (scan_cpp._BiSSMCpp) has the second direction add its output
    # (forward_dt_add_), z gradient (backward_dt's dz_out) and x gradient (conv_backward's dx_out) to the first's in
    # the kernels' stores: each equals the returned tensor written, or added to what was there. Views of a
    # (B, L, 2E) buffer, as the node hands them over; 3 taps: conv_backward's fallback through a fresh dx. A router's
    # per-image gates scale the scan's output (and grad_out in its backward, which returns their gradient)
    check_ops_into_given_outputs(taps)


def check_ops_into_given_outputs(taps):
    ops = torch.ops.dyvm_scan
    g = torch.Generator().manual_seed(taps)
    batch, length, channels, rank = 2, 23, 32, 4

    def halves():  # the x and z halves of a (B, L, 2E) buffer: (B, E, L) channel-last views, row stride 2E
        t = torch.randn(batch, length, 2 * channels, generator=g)
        return t, t[..., :channels].transpose(1, 2), t[..., channels:].transpose(1, 2)

    _, u, z = halves()
    u = u.contiguous().transpose(1, 2).contiguous().transpose(1, 2)            # the conv's output layout
    x_dbl = 0.5 * torch.randn(batch, length, rank + 32, generator=g)
    dt, B, C = x_dbl[..., :rank], x_dbl[..., rank:rank + 16], x_dbl[..., rank + 16:]
    weight = torch.randn(channels, rank, generator=g) / 2
    A = -torch.rand(channels, 16, generator=g).mul(2.5).exp()
    D, bias = torch.randn(channels, generator=g), 0.5 * torch.randn(channels, generator=g)
    args = (u, dt, weight, A, B, C, D, z, bias)
    for reverse in (False, True):
        y = ops.forward_dt(*args, reverse)
        buf, out, _ = halves()
        before = out.clone()
        ops.forward_dt_add_(out, *args, reverse)
        torch.testing.assert_close(out, before + y, rtol=0, atol=0)

        gout = halves()[1]
        ref = ops.backward_dt(gout, *args, reverse)
        for accumulate in (False, True):
            _, _, dz = halves()
            start = dz.clone()
            got = ops.backward_dt(gout, *args, reverse, dz, accumulate)
            assert got[4].numel() == 0                                          # dz went into dz_out
            torch.testing.assert_close(dz, start + ref[4] if accumulate else ref[4], rtol=0, atol=0)
            for a, b in zip(got[:4] + got[5:], ref[:4] + ref[5:]):
                torch.testing.assert_close(a, b, rtol=0, atol=0)

        _, x, _ = halves()
        w, cb = torch.randn(channels, taps, generator=g), torch.randn(channels, generator=g)
        ref = ops.conv_backward(gout, x, w, cb, True, None, reverse, True)
        for accumulate in (False, True):
            _, dx, _ = halves()
            start = dx.clone()
            got = ops.conv_backward(gout, x, w, cb, True, None, reverse, True, False, dx, accumulate)
            assert got[0].numel() == 0
            torch.testing.assert_close(dx, start + ref[0] if accumulate else ref[0], rtol=0, atol=0)
            torch.testing.assert_close(got[1], ref[1], rtol=0, atol=0)
            torch.testing.assert_close(got[2], ref[2], rtol=0, atol=0)
        # per-image scales: 0/1 gates exactly, other values up to float rounding
        for scale in (torch.tensor([0.0, 1.0]), torch.tensor([0.75, -1.5])):
            exact = bool(((scale == 0) | (scale == 1)).all())
            tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(ops.forward_dt(*args, reverse, scale), y * scale[:, None, None], **tol)
            buf, out, _ = halves()
            before = out.clone()
            ops.forward_dt_add_(out, *args, reverse, scale)
            torch.testing.assert_close(out, before + y * scale[:, None, None], **tol)
            got = ops.backward_dt(gout, *args, reverse, None, False, scale)
            want = ops.backward_dt(gout * scale[:, None, None], *args, reverse)
            for a, b in zip(got[:7], want[:7]):
                torch.testing.assert_close(a, b, rtol=1e-5 if not exact else 0, atol=1e-6 if not exact else 0)
            dscale = (gout * y).sum((1, 2))                                     # Σ grad_out · (output before scale)
            torch.testing.assert_close(got[7], dscale, rtol=1e-5, atol=1e-5 * dscale.abs().max().item())
    with pytest.raises(RuntimeError, match="dz_out needs z"):
        ops.backward_dt(gout, u, dt, weight, A, B, C, D, None, bias, False, torch.empty_like(gout))
    with pytest.raises(RuntimeError, match="a scale needs the z gate"):
        ops.forward_dt(u, dt, weight, A, B, C, D, None, bias, False, torch.ones(batch))
    with pytest.raises(RuntimeError, match="scale must be"):
        ops.forward_dt(*args, False, torch.ones(batch + 1))
    with pytest.raises(RuntimeError, match="dx_out must be"):
        ops.conv_backward(gout, x, w, cb, True, None, False, True, False, torch.empty(batch, channels, 3))


@needs_cpp
def test_cpp_scan_with_dt_proj_inside_refuses_other_layouts():
    ops = torch.ops.dyvm_scan
    u = torch.randn(2, 9, 24).transpose(1, 2)                                   # 24 channels: not whole blocks
    assert not ops.lanes_dt_applies(u, -torch.rand(24, 16), None)
    args = (u, torch.randn(2, 9, 4), torch.randn(24, 4), -torch.rand(24, 16), torch.randn(2, 9, 16),
            torch.randn(2, 9, 16), None, None, None)
    with pytest.raises(RuntimeError, match="scan with dt_proj: needs float32 channel-last"):
        ops.forward_dt(*args)
    assert not ops.lanes_dt_applies(torch.randn(2, 32, 9), -torch.rand(32, 16), None)  # (B, E, L) contiguous
    assert not ops.lanes_dt_applies(torch.randn(2, 9, 32).transpose(1, 2), -torch.rand(32, 8), None)  # 8 states
