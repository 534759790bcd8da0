"""Compiled CPU causal conv1d (+ bias + SiLU) against a float64 F.conv1d reference."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dyvm
from dyvm.kernels import conv as conv_mod
from dyvm.kernels import conv_cpp, scan_cpp
from dyvm.kernels.conv import causal_conv1d

CPP = scan_cpp.available()
needs_cpp = pytest.mark.skipif(not CPP, reason=f"C++ kernels unavailable: {scan_cpp.build_error()}")


def reference(x, weight, bias, silu):
    """float64 F.conv1d + SiLU, the definition."""
    w = weight if weight.dim() == 3 else weight.unsqueeze(1)
    length, k = x.shape[-1], w.shape[-1]
    out = F.conv1d(x, w, bias, padding=k - 1, groups=x.shape[1])[..., :length]
    return F.silu(out) if silu else out


def make_x(batch, channels, length, layout, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    if layout == "contiguous":
        return torch.randn(batch, channels, length, generator=g, dtype=dtype)
    if layout == "transposed":  # the mixer's view of in_proj's (B, L, 2E) output
        xz = torch.randn(batch, length, 2 * channels, generator=g, dtype=dtype)
        return xz.transpose(1, 2).chunk(2, dim=1)[1]
    # generic strides: every other channel, a window in time
    return torch.randn(batch, 2 * channels, length + 3, generator=g, dtype=dtype)[:, ::2, 2:length + 2]


def make_params(channels, k, *, bias=True, weight_2d=False, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    w = 0.5 * torch.randn(channels, 1, k, generator=g, dtype=dtype)
    if weight_2d:
        w = w.squeeze(1)
    b = 0.3 * torch.randn(channels, generator=g, dtype=dtype) if bias else None
    return w, b


def grads(fn, x, w, b, silu, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in (x, w)]
    leaves.append(None if b is None else b.detach().clone().requires_grad_())
    out = fn(leaves[0], leaves[1], leaves[2], silu)
    present = [t for t in leaves if t is not None]
    got = torch.autograd.grad(out, present, grad_out.to(out.dtype))
    it = iter(got)
    return out, [None if t is None else next(it) for t in leaves]


def assert_matches_reference(got, want):
    """got, want: ``grads`` results (float32 kernel, float64 definition): the output to 1e-5, the gradients of
    x, weight and bias to 1e-4 relative (bias None on both sides when there is none)."""
    (out, (dx, dw, db)), (ref, (rx, rw, rb)) = got, want
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx.double(), rx, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dw.double(), rw, rtol=1e-4, atol=1e-5)
    if rb is None:
        assert db is None
    else:
        torch.testing.assert_close(db.double(), rb, rtol=1e-4, atol=1e-5)


@needs_cpp
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("length", [1, 3, 200])
@pytest.mark.parametrize("silu", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_float64_reference(layout, k, length, silu, bias):
    batch, channels = 3, 21  # channels not a multiple of the kernel's 16-channel blocks
    x = make_x(batch, channels, length, layout)
    w, b = make_params(channels, k, bias=bias, weight_2d=(k == 2))
    grad_out = torch.randn(batch, channels, length, generator=torch.Generator().manual_seed(2))
    got = grads(conv_cpp.causal_conv1d_cpp, x, w, b, silu, grad_out)
    out, (dx, dw, db) = got
    assert out.dtype == torch.float32 and out.is_contiguous() and out.shape == x.shape
    assert dx.shape == x.shape and dw.shape == w.shape and (db is None) == (not bias)
    assert_matches_reference(got, grads(reference, x.double(), w.double(), None if b is None else b.double(),
                                        silu, grad_out.double()))


@needs_cpp
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("k,silu,bias", [(4, True, True), (1, False, True), (3, True, False)])
def test_gradcheck_float64(layout, k, silu, bias):
    x = make_x(2, 5, 9, layout, dtype=torch.float64)
    w, b = make_params(5, k, bias=bias, dtype=torch.float64)
    inputs = [x.detach().clone().requires_grad_(), w.requires_grad_()]
    if bias:
        inputs.append(b.requires_grad_())
        fn = lambda x, w, b: conv_cpp.causal_conv1d_cpp(x, w, b, silu)  # noqa: E731
    else:
        fn = lambda x, w: conv_cpp.causal_conv1d_cpp(x, w, None, silu)  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(inputs))


@needs_cpp
def test_float64_matches_reference_exactly_enough():
    x = make_x(2, 33, 50, "transposed", dtype=torch.float64)
    w, b = make_params(33, 4, dtype=torch.float64)
    torch.testing.assert_close(conv_cpp.causal_conv1d_cpp(x, w, b), reference(x, w, b, True),
                               rtol=1e-12, atol=1e-12)


@needs_cpp
@pytest.mark.parametrize("channels", [40, 48])
@pytest.mark.parametrize("channels_last,grad_layout", [(False, "contiguous"), (True, "contiguous"),
                                                        (True, "channel-last")])
def test_deterministic_and_thread_independent(channels_last, grad_layout, channels):
    """Both the generic kernels and the channel-last ones (x and the outputs with unit channel stride, the
    mixer's layout; grad_out of either layout; 48 channels: whole 16-channel blocks, the register kernels)
    give bit-identical results at any thread count."""
    x = make_x(16, channels, 60, "transposed")
    w, b = make_params(channels, 4)
    grad_out = torch.randn(16, channels, 60)
    if grad_layout == "channel-last":
        grad_out = grad_out.transpose(1, 2).contiguous().transpose(1, 2)
    fn = lambda x_, w_, b_, s_: conv_cpp.causal_conv1d_cpp(x_, w_, b_, s_, None, False, channels_last)  # noqa: E731
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, threads, 1):
            torch.set_num_threads(n)
            results.append(grads(fn, x, w, b, True, grad_out))
    finally:
        torch.set_num_threads(threads)
    for out, gs in results[1:]:
        assert torch.equal(out, results[0][0])
        for a, r in zip(gs, results[0][1]):
            assert torch.equal(a, r)


@needs_cpp
def test_dispatch_and_env_var(monkeypatch):
    x = make_x(2, 8, 10, "transposed")
    w, b = make_params(8, 4)
    calls = []
    real = conv_cpp.causal_conv1d_cpp
    monkeypatch.setattr(conv_cpp, "causal_conv1d_cpp", lambda *a: calls.append(1) or real(*a))
    monkeypatch.delenv(conv_mod.ENV_VAR, raising=False)
    fast = causal_conv1d(x, w, b)
    assert calls == [1]
    monkeypatch.setenv(conv_mod.ENV_VAR, "torch")
    slow = causal_conv1d(x, w, b)
    assert calls == [1]
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    monkeypatch.setenv(conv_mod.ENV_VAR, "cpp")
    causal_conv1d(x, w.squeeze(1), b, silu=False)
    assert calls == [1, 1]
    # not taken: dtypes the kernel does not have, and FLOP counting (FlopCounterMode must see F.conv1d)
    causal_conv1d(x.bfloat16(), w.bfloat16(), b.bfloat16())
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        causal_conv1d(x, w, b)
    assert calls == [1, 1] and counter.get_total_flops() > 0
    monkeypatch.setenv(conv_mod.ENV_VAR, "nope")
    with pytest.raises(ValueError, match="DYVM_CONV_BACKEND"):
        causal_conv1d(x, w, b)


@needs_cpp
def test_edge_shapes():
    for shape in [(0, 4, 5), (2, 0, 5), (2, 4, 0)]:
        x = torch.randn(*shape, requires_grad=True)
        w, b = make_params(shape[1], 4)
        w.requires_grad_()
        out = conv_cpp.causal_conv1d_cpp(x, w, b)
        assert out.shape == shape
        out.sum().backward()
        assert x.grad.shape == shape and w.grad.shape == w.shape
        assert torch.count_nonzero(w.grad) == 0


def test_model_forward_backward_matches_torch_backend(monkeypatch):
    """A small Vim's loss and gradients agree between the compiled conv and F.conv1d."""
    torch.manual_seed(0)
    model = dyvm.create_model("vim_tiny", img_size=16, patch_size=4, depth=2, embed_dim=32,
                              num_classes=5, in_chans=1)
    images = torch.randn(4, 1, 16, 16)
    results = {}
    for backend in ("torch", "auto"):
        monkeypatch.setenv(conv_mod.ENV_VAR, backend)
        model.zero_grad()
        loss = model(images).square().mean()
        loss.backward()
        results[backend] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                            if p.grad is not None})
    torch.testing.assert_close(results["auto"][0], results["torch"][0], rtol=1e-5, atol=1e-6)
    for name, g in results["torch"][1].items():
        torch.testing.assert_close(results["auto"][1][name], g, rtol=1e-3, atol=1e-5, msg=name)


# ------------------------------------------------------------ mask, reverse, channel-last output
def masked_reference(x, weight, bias, silu, mask, reverse):
    """float64 definition: m * act(conv(m * x)) over the (optionally) reversed sequence."""
    m = None if mask is None else mask[:, None, :]
    xm = x if m is None else x * m
    if reverse:
        xm = xm.flip(-1)
    out = reference(xm, weight, bias, silu)
    if reverse:
        out = out.flip(-1)
    return out if m is None else out * m


@needs_cpp
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("length", [1, 37])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_mask_reverse_layout_match_reference(layout, k, length, masked, reverse, channels_last):
    batch, channels = 3, 21
    x = make_x(batch, channels, length, layout)
    w, b = make_params(channels, k)
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand(batch, length, generator=g) > 0.4).float() if masked else None
    grad_out = torch.randn(batch, channels, length, generator=torch.Generator().manual_seed(2))
    fn = lambda x_, w_, b_, s_: causal_conv1d(x_, w_, b_, s_, mask=mask, reverse=reverse,  # noqa: E731
                                              channels_last=channels_last)
    got = grads(fn, x, w, b, True, grad_out)
    out, (dx, _, db) = got
    m64 = None if mask is None else mask.double()
    assert out.shape == x.shape and db is not None
    if length > 1 and channels_last:
        assert out.stride(1) == 1 and dx.stride(1) == 1
    elif length > 1:
        assert out.is_contiguous()
    assert_matches_reference(got, grads(lambda x_, w_, b_, s_: masked_reference(x_, w_, b_, s_, m64, reverse),
                                        x.double(), w.double(), b.double(), True, grad_out.double()))


@needs_cpp
@pytest.mark.parametrize("length", [1, 3, 5, 50])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("silu,bias", [(True, True), (False, True), (True, False)])
def test_sixteen_channel_blocks_match_reference(length, reverse, silu, bias):
    """The register kernels (float, channel-last x and grad_out, 4 taps, no mask, channels in whole blocks of
    16: the mixer's training case) against the float64 definition, sequences shorter than the taps included."""
    batch, channels = 5, 48
    x = make_x(batch, channels, length, "transposed")
    w, b = make_params(channels, 4, bias=bias)
    grad_out = torch.randn(batch, length, channels, generator=torch.Generator().manual_seed(2)).transpose(1, 2)
    fn = lambda x_, w_, b_, s_: causal_conv1d(x_, w_, b_, s_, reverse=reverse, channels_last=True)  # noqa: E731
    got = grads(fn, x, w, b, silu, grad_out)
    assert (got[1][2] is None) == (not bias)
    assert_matches_reference(got, grads(lambda x_, w_, b_, s_: masked_reference(x_, w_, b_, s_, None, reverse),
                                        x.double(), w.double(), None if b is None else b.double(), silu,
                                        grad_out.double()))


def test_mask_reverse_torch_backend_matches_cpp(monkeypatch):
    x = make_x(2, 5, 9, "transposed")
    w, b = make_params(5, 4)
    mask = torch.tensor([[1, 1, 0, 1, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 0, 0, 1]], dtype=torch.float32)
    ref = masked_reference(x.double(), w.double(), b.double(), True, mask.double(), True)
    monkeypatch.setenv(conv_mod.ENV_VAR, "torch")
    got = causal_conv1d(x, w, b, True, mask=mask, reverse=True)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


@needs_cpp
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("silu", [True, False])
def test_gradcheck_with_mask_gradient(reverse, silu):
    # the mask gets a gradient (DyVM's straight-through keep decisions); any mask values
    g = torch.Generator().manual_seed(4)
    xz = torch.randn(2, 6, 2 * 5, generator=g, dtype=torch.float64)
    x = xz.transpose(1, 2)[:, 5:].detach().requires_grad_()  # channel-last view (B, E, L)
    w = (0.5 * torch.randn(5, 4, generator=g, dtype=torch.float64)).requires_grad_()
    b = (0.3 * torch.randn(5, generator=g, dtype=torch.float64)).requires_grad_()
    m = torch.rand(2, 6, generator=g, dtype=torch.float64).requires_grad_()
    fn = lambda x_, w_, b_, m_: conv_cpp.causal_conv1d_cpp(x_, w_, b_, silu, m_, reverse, True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b, m), eps=1e-6, atol=1e-6, rtol=1e-5)
    ref = masked_reference(x, w, b, silu, m, reverse)
    torch.testing.assert_close(fn(x, w, b, m), ref, rtol=1e-10, atol=1e-10)
