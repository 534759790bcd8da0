"""Triton backend: scan and conv kernels (forward and every gradient) and the Vim/DyVM oracles.

Without a GPU the kernels run in Triton's interpreter, which triton switches on per process
when it is imported (``TRITON_INTERPRET=1``). So the ``case_*`` checks run in one child
process (this file run as a script, the variable set before anything imports triton) and
each becomes one test here; this process, and every other test module, never sees the
variable. The remaining tests (backend names, ``auto``, errors) run in-process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

if __name__ == "__main__":  # the child: before torch, dyvm or triton are imported
    os.environ["TRITON_INTERPRET"] = "1"
    sys.path.insert(0, sys.argv[2])  # the dyvm the parent imported

import pytest  # noqa: E402
import torch  # noqa: E402

import dyvm  # noqa: E402
from dyvm.kernels import conv as conv_mod  # noqa: E402
from dyvm.kernels import scan as scan_mod  # noqa: E402
from dyvm.kernels import scan_cuda, triton_util  # noqa: E402
from dyvm.kernels.scan import resolve_backend, selective_scan, selective_scan_reference  # noqa: E402

sys.path.insert(0, str(HERE))
import test_conv  # noqa: E402
import test_dyvm  # noqa: E402
import test_scan  # noqa: E402
import test_vim  # noqa: E402
from conftest import ORACLE  # noqa: E402

CHILD_TIMEOUT_S = 600

# ----------------------------------------------------------------- helpers of the child


@contextmanager
def kernel_launches():
    """Record the names of the Triton kernels launched inside the block."""
    from dyvm.kernels import conv_triton, scan_triton

    names: list[str] = []
    real = triton_util.launch

    def spy(kernel, *args, **kwargs):
        names.append(kernel.__name__)
        return real(kernel, *args, **kwargs)

    conv_triton.launch = scan_triton.launch = spy
    try:
        yield names
    finally:
        conv_triton.launch = scan_triton.launch = real


@contextmanager
def env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def attr(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


_oracles: dict = {}


def oracle(name):
    if name not in _oracles:
        _oracles[name] = torch.load(ORACLE / f"{name}.pt", weights_only=True)
    return _oracles[name]


def scan_vs_fp64(**kw):
    """test_scan's check (fp32 forward and every gradient against a float64 reference run)."""
    tensors, softplus = test_scan.make_inputs(**kw)
    grad_out = torch.randn(tensors[0].shape, generator=torch.Generator().manual_seed(1))
    with kernel_launches() as names:
        out, grads = test_scan.run_with_grads(
            lambda *a: selective_scan(*a, backend="triton"), tensors, softplus, grad_out)
    assert names == ["_scan_fwd_kernel", "_scan_bwd_kernel"], names
    ref_out, ref_grads = test_scan.fp64_reference(tensors, softplus, grad_out)
    assert out.dtype == torch.float32 and out.shape == tensors[0].shape
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    for name, t, g, rg in zip(test_scan.NAMES, tensors, grads, ref_grads):
        if t is None:
            assert g is None
            continue
        assert g.shape == t.shape and g.dtype == t.dtype, name
        torch.testing.assert_close(g.double(), rg, rtol=1e-4, atol=1e-5, msg=lambda m: f"d{name}: {m}")


def conv_vs_fp64(layout, k, length, silu, bias, batch=3, channels=21, dtype=torch.float32, tol=1e-5):
    from dyvm.kernels.conv_triton import causal_conv1d_triton

    x = test_conv.make_x(batch, channels, length, layout, dtype=dtype)
    w, b = test_conv.make_params(channels, k, bias=bias, weight_2d=(k == 2), dtype=dtype)
    grad_out = torch.randn(batch, channels, length, generator=torch.Generator().manual_seed(2), dtype=dtype)
    with kernel_launches() as names:
        out, grads = test_conv.grads(causal_conv1d_triton, x, w, b, silu, grad_out)
    if x.numel():
        assert names == ["_conv_fwd_kernel", "_conv_bwd_pre_kernel", "_conv_bwd_x_kernel"], names
    ref_out, ref_grads = test_conv.grads(test_conv.reference, x.double(), w.double(),
                                         None if b is None else b.double(), silu, grad_out.double())
    assert out.shape == x.shape and out.dtype == dtype
    torch.testing.assert_close(out.double(), ref_out, rtol=tol, atol=tol)
    for name, t, g, rg in zip("xwb", (x, w, b), grads, ref_grads):
        if t is None:
            assert g is None
            continue
        assert g.shape == t.shape and g.dtype == dtype, name
        torch.testing.assert_close(g.double(), rg, rtol=tol, atol=tol, msg=lambda m: f"d{name}: {m}")


# ----------------------------------------------------------------- the interpreted cases

SCAN_CONFIGS = {k: v for k, v in test_scan.CONFIGS.items() if k != "long"}  # "long": 8 s interpreted
SCAN_CONFIGS.update({
    "chunk_multiple": dict(batch=1, channels=3, length=32),   # ends exactly on a checkpoint
    "many_chunks": dict(batch=1, channels=2, length=90, nstate=4),
})


def _scan_case(cfg):
    return lambda: scan_vs_fp64(**SCAN_CONFIGS[cfg])


CASES = {f"scan_{cfg}": _scan_case(cfg) for cfg in SCAN_CONFIGS}


def case(fn):
    CASES[fn.__name__[len("case_"):]] = fn
    return fn


@case
def case_scan_channel_blocks():
    """Several channel blocks with a ragged last one: dB, dC summed over the blocks' partials."""
    from dyvm.kernels import scan_triton

    with attr(scan_triton, "BLOCK_E_INTERPRETED", 4):
        scan_vs_fp64(batch=2, channels=10, length=21)


@case
def case_scan_float64():
    tensors, softplus = test_scan.make_inputs(batch=2, channels=5, length=20, dtype=torch.float64)
    grad_out = torch.randn(tensors[0].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out, grads = test_scan.run_with_grads(
        lambda *a: selective_scan(*a, backend="triton"), tensors, softplus, grad_out)
    ref_out, ref_grads = test_scan.fp64_reference(tensors, softplus, grad_out)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref_out, rtol=1e-11, atol=1e-11)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, rtol=1e-10, atol=1e-10)


@case
def case_scan_bf16():
    test_scan.test_low_precision_inputs("triton", torch.bfloat16)


@case
def case_scan_fp16():
    test_scan.test_low_precision_inputs("triton", torch.float16)


@case
def case_scan_mixed_dtypes():
    """Autocast-like inputs: bf16 activations, fp32 A, D and Δ bias; read as they are."""
    tensors, softplus = test_scan.make_inputs(batch=2, channels=4, length=19)
    mixed = [t.detach().to(torch.bfloat16 if i in (0, 1, 3, 4, 6) else torch.float32).requires_grad_()
             for i, t in enumerate(tensors)]
    out = selective_scan(*mixed, softplus, backend="triton")
    assert out.dtype == torch.bfloat16
    want = selective_scan_reference(*[t.detach().float() for t in mixed], softplus)
    torch.testing.assert_close(out.float(), want, rtol=2e-2, atol=2e-2)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    grads = torch.autograd.grad(out, mixed, grad_out.bfloat16())
    f32 = [t.detach().float().requires_grad_() for t in mixed]
    ref = torch.autograd.grad(selective_scan_reference(*f32, softplus), f32, grad_out.bfloat16().float())
    for name, t, g, r in zip(test_scan.NAMES, mixed, grads, ref):
        assert g.dtype == t.dtype, name
        torch.testing.assert_close(g.float(), r, rtol=3e-2, atol=3e-2 * r.abs().max().item(), msg=name)


@case
def case_scan_reverse():
    """reverse=True walks memory backwards in the kernels (no flipped copies): against the float64
    reference of the flipped scan, and bit for bit the forward kernels on flipped inputs."""
    from dyvm.kernels.scan_triton import selective_scan_triton

    def no_copies(*args, **kwargs):
        raise AssertionError("the triton backend flipped its inputs instead of scanning in reverse")

    for cfg in ("full", "bare", "no_softplus", "n8_odd", "single_step", "many_chunks"):
        tensors, softplus = test_scan.make_inputs(**SCAN_CONFIGS[cfg])
        grad_out = torch.randn(tensors[0].shape, generator=torch.Generator().manual_seed(1))
        flipped = test_scan._time_flipped(tensors)
        with attr(scan_mod, "_flipped", no_copies), kernel_launches() as names:
            out, grads = test_scan.run_with_grads(
                lambda *a: selective_scan(*a, backend="triton", reverse=True), flipped, softplus, grad_out.flip(-1))
        assert names == ["_scan_fwd_kernel", "_scan_bwd_kernel"], names
        ref_out, ref_grads = test_scan._unflip(*test_scan.fp64_reference(tensors, softplus, grad_out))
        torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
        fwd_out, fwd_grads = test_scan.run_with_grads(
            lambda *a: selective_scan_triton(*a), test_scan._time_flipped(flipped), softplus, grad_out)
        assert torch.equal(out, fwd_out.flip(-1)), cfg
        for i, (name, g, rg, fg) in enumerate(zip(test_scan.NAMES, grads, ref_grads, fwd_grads)):
            if g is None:
                continue
            torch.testing.assert_close(g.double(), rg, rtol=1e-4, atol=1e-5, msg=lambda m: f"{cfg} d{name}: {m}")
            assert torch.equal(g, fg.flip(-1) if i in test_scan.TIME_AXIS else fg), f"{cfg} d{name}"


@case
def case_scan_no_grad_path():
    test_scan.test_no_grad_path_matches("triton")


@case
def case_scan_non_contiguous():
    test_scan.test_non_contiguous_inputs("triton")


@case
def case_scan_empty():
    for batch, length in ((0, 5), (2, 0)):
        tensors, softplus = test_scan.make_inputs(batch=max(batch, 1), channels=3, length=max(length, 1))
        u, delta, A, Bm, Cm, Dv, zz, db = [t.detach() for t in tensors]
        cut = [x[:batch, :, :length].clone().requires_grad_() for x in (u, delta, Bm, Cm, zz)]
        out = selective_scan(cut[0], cut[1], A, cut[2], cut[3], Dv, cut[4], db, softplus, backend="triton")
        assert out.shape == cut[0].shape
        out.sum().backward()
        assert all(t.grad is not None and t.grad.shape == t.shape for t in cut)


CONV_COMBOS = [(4, 70, True, True), (1, 3, False, False), (2, 1, True, False), (4, 33, False, True)]


@case
def case_conv_layouts():
    for layout in ("contiguous", "transposed", "strided"):
        for k, length, silu, bias in CONV_COMBOS:
            conv_vs_fp64(layout, k, length, silu, bias)


@case
def case_conv_blocks():
    """Several channel and time blocks: halos across time blocks, dw/db partials summed."""
    from dyvm.kernels import conv_triton

    with attr(conv_triton, "BLOCKS_INTERPRETED", (8, 16)):
        conv_vs_fp64("transposed", 4, 45, True, True)


@case
def case_conv_float64():
    conv_vs_fp64("strided", 4, 30, True, True, dtype=torch.float64, tol=1e-12)


@case
def case_conv_bf16():
    from dyvm.kernels.conv_triton import causal_conv1d_triton

    x = test_conv.make_x(2, 8, 20, "transposed").bfloat16().requires_grad_()
    w, b = (t.requires_grad_() for t in test_conv.make_params(8, 4))  # fp32 parameters, as under autocast
    out = causal_conv1d_triton(x, w, b)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), test_conv.reference(x.detach().float(), w.detach(), b.detach(), True),
                               rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.float32 and b.grad.dtype == torch.float32


@case
def case_conv_empty():
    from dyvm.kernels.conv_triton import causal_conv1d_triton

    for shape in ((0, 4, 5), (2, 0, 5), (2, 4, 0)):
        x = torch.randn(*shape, requires_grad=True)
        w, b = (t.requires_grad_() for t in test_conv.make_params(shape[1], 4))
        out = causal_conv1d_triton(x, w, b)
        assert out.shape == shape
        out.sum().backward()
        assert x.grad.shape == shape and w.grad.shape == w.shape and b.grad.shape == b.shape
        assert torch.count_nonzero(w.grad) == 0


@case
def case_conv_reverse():
    """reverse=True runs the conv anti-causally in the kernels (no flipped copies): against the float64
    definition on flipped inputs, the output and dx bit for bit the causal kernels on flipped inputs
    (dw and dbias sum over other time blocks, so only close), and conv.causal_conv1d routes it there."""
    from dyvm.kernels import conv_triton

    for k, length, silu, bias in CONV_COMBOS:
        x = test_conv.make_x(3, 21, length, "transposed")
        w, b = test_conv.make_params(21, k, bias=bias, weight_2d=(k == 2))
        g = torch.randn(3, 21, length, generator=torch.Generator().manual_seed(2))
        rev = lambda *a: conv_triton.causal_conv1d_triton(*a, reverse=True)  # noqa: E731
        with kernel_launches() as names:
            out, grads = test_conv.grads(rev, x, w, b, silu, g)
        assert names == ["_conv_fwd_kernel", "_conv_bwd_pre_kernel", "_conv_bwd_x_kernel"], names
        flip_out, flip_grads = test_conv.grads(conv_triton.causal_conv1d_triton, x.flip(-1), w, b, silu, g.flip(-1))
        ref_out, ref_grads = test_conv.grads(test_conv.reference, x.flip(-1).double(), w.double(),
                                             None if b is None else b.double(), silu, g.flip(-1).double())
        assert torch.equal(out, flip_out.flip(-1)) and torch.equal(grads[0], flip_grads[0].flip(-1))
        torch.testing.assert_close(out.double(), ref_out.flip(-1), rtol=1e-5, atol=1e-5)
        for got, want in zip(grads, ref_grads):
            if want is not None:
                want = want.flip(-1) if got.shape == x.shape else want
                torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("reverse"))
        return real(*args, **kwargs)

    real = conv_triton.causal_conv1d_triton
    x = test_conv.make_x(2, 8, 10, "transposed")
    w, b = test_conv.make_params(8, 4)
    mask = (torch.arange(10) < 7).float().expand(2, 10)
    with env(DYVM_CONV_BACKEND="triton"), attr(conv_triton, "causal_conv1d_triton", spy):
        got = conv_mod.causal_conv1d(x, w, b, mask=mask, reverse=True)
    assert seen == [True]
    m = mask[:, None, :]
    want = test_conv.reference((x * m).flip(-1), w, b, True).flip(-1) * m
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@case
def case_conv_dispatch():
    """DYVM_CONV_BACKEND=triton routes conv.causal_conv1d to the kernels, except while FLOPs
    are counted (FlopCounterMode must see F.conv1d)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = test_conv.make_x(2, 8, 10, "transposed")
    w, b = test_conv.make_params(8, 4)
    with env(DYVM_CONV_BACKEND="triton"), kernel_launches() as names:
        got = conv_mod.causal_conv1d(x, w, b)
        assert names == ["_conv_fwd_kernel"]
        with FlopCounterMode(display=False) as counter:
            conv_mod.causal_conv1d(x, w, b)
        assert names == ["_conv_fwd_kernel"] and counter.get_total_flops() > 0
    torch.testing.assert_close(got, test_conv.reference(x, w, b, True), rtol=1e-5, atol=1e-6)


def _oracle_case(fn):
    """One of test_vim's / test_dyvm's oracle tests, with the Triton scan and conv."""
    def run():
        with env(DYVM_CONV_BACKEND="triton"), kernel_launches() as names:
            fn(oracle, "triton")
        assert "_scan_fwd_kernel" in names and "_conv_fwd_kernel" in names, sorted(set(names))
        return sorted(set(names))
    return run


CASES["oracle_vim"] = _oracle_case(test_vim.test_vim_matches_official_oracle)
CASES["oracle_dyvm_eval"] = _oracle_case(test_dyvm.test_eval_matches_official_oracle)
CASES["oracle_dyvm_train"] = _oracle_case(test_dyvm.test_train_matches_official_oracle_with_replayed_noise)


def run_cases(out_path: str) -> None:
    """The child's work: every case, each recorded as ok / traceback, with its seconds."""
    from dyvm.kernels import scan_triton

    results = {"interpreted": triton_util.interpreted(scan_triton._scan_fwd_kernel), "cases": {}}
    torch.set_num_threads(1)
    for name, fn in CASES.items():
        t0 = time.perf_counter()
        try:
            fn()
            entry = {"ok": True}
        except BaseException:  # noqa: BLE001 - reported to the parent test
            entry = {"ok": False, "error": traceback.format_exc()}
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        results["cases"][name] = entry
    Path(out_path).write_text(json.dumps(results, indent=1))


# ----------------------------------------------------------------- the parent's tests


class Child:
    """A subprocess started now, waited for when its result is first needed."""

    def __init__(self, argv, env):
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.output = None

    def wait(self) -> str:
        if self.output is None:
            try:
                self.output, _ = self.proc.communicate(timeout=CHILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.output = self.proc.communicate()[0] + f"\n[killed after {CHILD_TIMEOUT_S} s]"
            self.wall_s = time.perf_counter() - self.t0
        assert self.proc.returncode == 0, f"{self.proc.args} failed:\n{self.output[-6000:]}"
        return self.output


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """The two interpreted subprocesses, run side by side: this file's cases, and the dry run of
    benchmarks/gpu_check.py. No DYVM_* variables reach them."""
    tmp = tmp_path_factory.mktemp("triton")
    env_child = {k: v for k, v in os.environ.items() if not k.startswith("DYVM_") and k != "TRITON_INTERPRET"}
    env_child["OMP_NUM_THREADS"] = "1"
    src = str(Path(dyvm.__file__).resolve().parents[1])
    kids = {"cases": Child([sys.executable, __file__, str(tmp / "cases.json"), src], env_child),
            "dry_run": Child([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run",
                              "--out", str(tmp / "gpu_check.json")], env_child)}
    kids["cases"].json = tmp / "cases.json"
    kids["dry_run"].json = tmp / "gpu_check.json"
    yield kids
    for kid in kids.values():
        if kid.proc.poll() is None:
            kid.proc.kill()
            kid.proc.wait()


@pytest.fixture(scope="module")
def interpreted_results(children):
    kid = children["cases"]
    kid.wait()
    results = json.loads(kid.json.read_text())
    results["wall_s"] = kid.wall_s
    return results


_TRITON_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


def test_kernels_compile_for_hopper(monkeypatch, children):
    """The GPU path, minus the GPU: every kernel, with the arguments a bf16 autocast training
    step passes, compiles to PTX and a cubin for sm_90 (H100/H200); nothing is launched.
    (``children`` only starts the interpreted subprocesses, which run meanwhile.)"""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from dyvm.kernels import conv_triton, scan_triton

    if triton_util.interpreted(scan_triton._scan_fwd_kernel):
        pytest.skip("the whole test run has TRITON_INTERPRET=1: this process has no compiler path")
    compiled = []

    def compile_only(kernel, grid, device, *args, num_warps=None, **meta):
        sig = {}
        for name, a in zip(kernel.arg_names, args):
            sig[name] = "*" + _TRITON_TYPES[a.dtype] if isinstance(a, torch.Tensor) else "i32"
        sig.update({name: "constexpr" for name in meta})
        binary = triton.compile(ASTSource(kernel, sig, meta), target=GPUTarget("cuda", 90, 32),
                                options={"num_warps": num_warps or 4})
        assert "cubin" in binary.asm and ".entry " + kernel.__name__ in binary.asm["ptx"]
        compiled.append(kernel.__name__)

    monkeypatch.setattr(scan_triton, "launch", compile_only)
    monkeypatch.setattr(conv_triton, "launch", compile_only)
    monkeypatch.setattr(scan_triton, "_blocks", lambda u, n, block_e_cuda: (block_e_cuda, 16))
    monkeypatch.setattr(conv_triton, "_blocks", lambda x: conv_triton.BLOCKS_CUDA)
    tensors, softplus = test_scan.make_inputs(batch=2, channels=4, length=20)
    mixed = [t.detach().to(torch.bfloat16 if i in (0, 1, 3, 4, 6) else torch.float32).requires_grad_()
             for i, t in enumerate(tensors)]
    for reverse in (False, True):
        scan_triton.selective_scan_triton(*mixed, softplus, reverse=reverse).sum().backward()
    for reverse in (False, True):
        x = test_conv.make_x(2, 8, 20, "transposed").bfloat16().requires_grad_()
        w, b = (t.requires_grad_() for t in test_conv.make_params(8, 4))
        conv_triton.causal_conv1d_triton(x, w, b, reverse=reverse).float().sum().backward()
    assert compiled == (["_scan_fwd_kernel", "_scan_bwd_kernel"] * 2
                        + ["_conv_fwd_kernel", "_conv_bwd_pre_kernel", "_conv_bwd_x_kernel"] * 2)


def test_triton_is_importable():
    """triton comes with the pinned CUDA build of torch: the backend must not silently vanish."""
    assert triton_util.available(), triton_util.import_error()


def test_backend_names(monkeypatch):
    assert "triton" in scan_mod.BACKENDS and "triton" in conv_mod.BACKENDS
    assert resolve_backend("triton") == "triton"
    monkeypatch.setenv(scan_mod.ENV_VAR, "triton")
    assert resolve_backend(None, torch.device("cpu")) == "triton"
    model = dyvm.create_model("vim_tiny", depth=1, scan_backend="triton")
    assert model.layers[0].mixer.scan_backend == "triton"
    assert model.set_scan_backend(None).layers[0].mixer.scan_backend is None


def test_auto_on_cuda(monkeypatch):
    """auto on CUDA tensors: mamba_ssm when it imports, else triton, else torch (with a warning)."""
    monkeypatch.delenv(scan_mod.ENV_VAR, raising=False)
    cuda = torch.device("cuda")
    monkeypatch.setattr(scan_cuda, "available", lambda: True)
    assert resolve_backend(None, cuda) == "cuda"
    monkeypatch.setattr(scan_cuda, "available", lambda: False)
    assert resolve_backend(None, cuda) == "triton"
    assert resolve_backend("auto", cuda) == "triton"
    monkeypatch.setattr(triton_util, "available", lambda: False)
    monkeypatch.setattr(scan_mod, "_warned", set())
    with pytest.warns(RuntimeWarning, match="triton"):
        assert resolve_backend(None, cuda) == "torch"
    assert resolve_backend(None, torch.device("cpu")) in ("cpp", "torch")


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    """In a process where triton compiles (no TRITON_INTERPRET), CPU tensors are a clear error."""
    from dyvm.kernels import scan_triton

    tensors, softplus = test_scan.make_inputs(batch=1, channels=2, length=5)
    plain = [None if t is None else t.detach() for t in tensors]
    x = test_conv.make_x(1, 2, 5, "contiguous")
    w, b = test_conv.make_params(2, 4)
    monkeypatch.setenv(conv_mod.ENV_VAR, "triton")
    if triton_util.interpreted(scan_triton._scan_fwd_kernel):  # pytest itself run with TRITON_INTERPRET=1
        torch.testing.assert_close(selective_scan(*plain, softplus, backend="triton"),
                                   selective_scan_reference(*plain, softplus), rtol=1e-5, atol=1e-5)
        assert conv_mod.causal_conv1d(x, w, b).shape == x.shape
    else:
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            selective_scan(*plain, softplus, backend="triton")
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            conv_mod.causal_conv1d(x, w, b)


def test_unknown_conv_backend_still_rejected(monkeypatch):
    monkeypatch.setenv(conv_mod.ENV_VAR, "tritonn")
    x = test_conv.make_x(1, 2, 5, "contiguous")
    w, b = test_conv.make_params(2, 4)
    with pytest.raises(ValueError, match="DYVM_CONV_BACKEND"):
        conv_mod.causal_conv1d(x, w, b)


def test_gpu_check_dry_run(children):
    """benchmarks/gpu_check.py --dry-run: parity rows all pass, every benchmark cell timed."""
    output = children["dry_run"].wait()
    res = json.loads(children["dry_run"].json.read_text())
    assert res["env"]["dry_run"] is True and res["env"]["device"] == "cpu"
    assert res["parity"] and all(r["ok"] for r in res["parity"]), res["parity"]
    assert {r["check"] for r in res["parity"]} >= {"scan float32", "scan bfloat16", "conv float32",
                                                    "oracle dyvm_small train+grads"}
    assert len(res["kernel_bench"]) == 4 and not any("error" in r for r in res["kernel_bench"]), res["kernel_bench"]
    assert len(res["bench"]) == 8 and res["goals"] == []
    for row in res["bench"]:
        assert not row["errors"] and set(row["median_ms"]) == {"triton", "torch"}, row
        assert row["ratio_vs_triton"]["torch"]["median"] > 0
    assert "| vim_tiny | train | bf16 | 2 |" in output and "DRY RUN" in output


def test_child_ran_interpreted(interpreted_results):
    assert interpreted_results["interpreted"] is True
    assert set(interpreted_results["cases"]) == set(CASES)
    print(f"\ninterpreted cases: {interpreted_results['wall_s']:.1f} s wall, slowest: " + ", ".join(
        f"{n} {e['seconds']}s" for n, e in sorted(interpreted_results["cases"].items(),
                                                    key=lambda kv: -kv[1]["seconds"])[:4]))


@pytest.mark.parametrize("name", list(CASES))
def test_interpreted(interpreted_results, name):
    entry = interpreted_results["cases"][name]
    assert entry["ok"], entry.get("error")


if __name__ == "__main__":
    run_cases(sys.argv[1])
