"""The Vim backbone: parity with the official implementation, registry, config keys, bad input."""
import copy

import pytest
import timm
import torch

import dyvm
from conftest import available_backends


@pytest.mark.parametrize("backend", available_backends())
def test_vim_matches_official_oracle(oracle, backend):
    o = oracle("vim_small")
    model = dyvm.create_model("vim_small", **o["config"]).eval()
    model.load_state_dict(o["state_dict"], strict=True)
    model.set_scan_backend(backend)
    with torch.no_grad():
        out = model.forward_detailed(o["input"], return_layers=True)
    assert (out.logits - o["logits"]).abs().max() < 1e-5
    assert (out.tokens - o["other_tokens"]).abs().max() < 1e-5
    assert len(out.layer_hidden) == 4
    for i in range(4):
        # intermediate states reach |23|: there the oracle itself (fp32) is 1.6e-5 off the float64
        # truth (see the next test), and fp32 matmuls sum in a CPU-dependent order (3e-5 apart on an
        # AVX2 core, 1e-5 on an AVX-512 one), so states get the oracle README's atol (1e-4)
        assert torch.allclose(out.layer_hidden[i], o["layer_hidden"][i], rtol=1e-5, atol=1e-4), i
        assert torch.allclose(out.layer_residual[i], o["layer_residual"][i], rtol=1e-5, atol=1e-4), i
    with torch.no_grad():
        assert torch.equal(model(o["input"]), out.logits)


@pytest.mark.parametrize("backend", available_backends())
def test_vim_close_to_float64_truth(oracle, backend):
    o = oracle("vim_small")
    model = dyvm.create_model("vim_small", **o["config"]).eval()
    model.load_state_dict(o["state_dict"])
    truth = model.double().set_scan_backend("reference")
    with torch.no_grad():
        ref = truth.forward_detailed(o["input"].double(), return_layers=True)
        out = model.float().set_scan_backend(backend).forward_detailed(o["input"], return_layers=True)
    # the oracle README's logits tolerance: fp32 sums run in a CPU-dependent order (1.07e-5 on an Intel Xeon)
    assert (out.logits.double() - ref.logits).abs().max() < 2e-5
    for mine, exact in zip(out.layer_hidden + out.layer_residual, ref.layer_hidden + ref.layer_residual):
        # fp32 through 4 layers: the reference backend in fp32 needs rtol 5e-5 here too
        assert torch.allclose(mine.double(), exact, rtol=1e-4, atol=1e-5)


def test_batch_composition_does_not_matter(oracle):
    o = oracle("vim_small")
    model = dyvm.create_model("vim_small", **o["config"]).eval()
    model.load_state_dict(o["state_dict"])
    with torch.no_grad():
        full = model(o["input"])
        single = torch.cat([model(o["input"][i:i + 1]) for i in range(3)])
    assert torch.allclose(full, single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,params,keys", [("vim_tiny", 7.148, 415), ("vim_small", 25.797, None),
                                              ("vim_base", 97.598, None)])
def test_registered_sizes(name, params, keys):
    model = dyvm.create_model(name)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(n, 3) == params
    sd = model.state_dict()
    if keys is not None:
        assert len(sd) == keys
    assert set(sd) == {n for n, _ in model.named_parameters()}  # no extra persistent buffers
    assert sd["pos_embed"].shape[1] == 197 and model.patch_embed.num_patches == 196


def test_timm_registry_and_data_config():
    model = timm.create_model("vim_tiny", num_classes=10, img_size=32, patch_size=8, stride=8, depth=2)
    assert isinstance(model, dyvm.VisionMamba) and model.num_classes == 10
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg["input_size"] == (3, 32, 32) and cfg["interpolation"] == "bicubic"
    assert "vim_small" in timm.list_models("vim_*") and "dyvm_vim_small" in dyvm.list_models()
    with pytest.raises(ValueError, match="checkpoint_path"):
        timm.create_model("vim_tiny", pretrained=True)


def test_config_keys(oracle):
    cfg = dict(oracle("vim_small")["config"])
    model = dyvm.create_model("vim_tiny", **cfg)
    assert model.embed_dim == 64 and model.depth == 4
    assert dyvm.create_model("vim_tiny", img_size=32, patch_size=8, depth=1, in_chans=1).in_chans == 1
    assert dyvm.create_model("vim_tiny", depth=1).config["drop_path_rate"] == 0.0
    for key, value in [("if_rope", True), ("bimamba_type", "v1"), ("use_middle_cls_token", False),
                       ("if_cls_token", False), ("rms_norm", False)]:
        with pytest.raises(ValueError, match=key):
            dyvm.create_model("vim_tiny", depth=1, **{key: value})
    with pytest.raises(TypeError, match="not_a_key"):
        dyvm.create_model("vim_tiny", not_a_key=1)
    with pytest.raises(ValueError, match="unknown model name"):
        dyvm.create_model("vim_huge")
    with pytest.raises(ValueError, match="scan backend|backend"):
        dyvm.create_model("vim_tiny", depth=1, scan_backend="fortran")


def test_bad_inputs():
    model = dyvm.create_model("vim_tiny", img_size=32, patch_size=8, depth=1, num_classes=3).eval()
    good = torch.randn(2, 3, 32, 32)
    model(good)
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="img_size=48"):
        model(torch.randn(2, 3, 48, 48))
    with pytest.raises(ValueError, match="square"):
        model(torch.randn(2, 3, 32, 48))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r"torch.float64 but the model's weights are torch.float32"):
        model(good.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts for the model: allowed
        model(good.bfloat16())
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(good.clone().index_fill_(0, torch.tensor([1]), float("nan")))
    for bad in (float("inf"), -float("inf")):
        odd = good.clone()
        odd[1, 2, 3, 4] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            model(odd)
    odd = good.clone()
    odd[0, 0, :2, :] = 3e38  # finite values whose sum overflows: not an error
    model(odd)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(3, 32, 32))


def test_gradients_reach_every_parameter(oracle):
    o = oracle("vim_small")
    model = dyvm.create_model("vim_small", **o["config"]).train()
    model.load_state_dict(o["state_dict"])
    model(o["input"]).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name  # both SSM branches train


def test_cpu_autocast_runs_conv_and_scan_in_fp32_and_trains(monkeypatch):
    """Under CPU autocast only the matmuls run in bf16: the mixer hands the conv (and so the scan) float32
    inputs, so the compiled kernels run instead of a bf16 conv plus casts; gradients still reach every
    parameter and stay close to the fp32 ones."""
    from dyvm.models import vim as vim_module

    seen = []  # the dtype each SSM direction's conv reads
    real = vim_module.causal_conv1d
    monkeypatch.setattr(vim_module, "causal_conv1d", lambda x, *a, **k: (seen.append(x.dtype), real(x, *a, **k))[1])
    real_both = vim_module.bidirectional_ssm

    def both_directions(xz, *a, **k):  # the training node of both directions (its convs read xz's halves)
        y = real_both(xz, *a, **k)
        seen.extend([xz.dtype] * 2 if y is not None else [])
        return y

    monkeypatch.setattr(vim_module, "bidirectional_ssm", both_directions)
    torch.manual_seed(0)
    model = dyvm.create_model("vim_tiny", img_size=32, patch_size=8, depth=2, embed_dim=32, num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    model(x).square().mean().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out.float().square().mean().backward()
    assert out.dtype == torch.bfloat16 and seen == [torch.float32] * 4   # 2 layers x 2 directions
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert (p.grad - ref[name]).norm() <= 0.1 * ref[name].norm() + 1e-6, name


def test_bf16_autocast_on_cpu(oracle):
    o = oracle("vim_small")
    model = dyvm.create_model("vim_small", **o["config"]).eval()
    model.load_state_dict(o["state_dict"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(o["input"])
    assert torch.isfinite(logits).all()
    assert (logits.float() - o["logits"]).abs().max() < 0.25 * o["logits"].abs().max()


def _python_mix(mixer, monkeypatch, *args):
    """The Python mixer's output (the fused inference path switched off for this call)."""
    with monkeypatch.context() as m:
        m.setattr(mixer, "fused_call", lambda *a, **k: None)
        return mixer.mix(*args)


def test_fused_inference_mixer_equals_python_mixer(monkeypatch):
    """Eager CPU fp32 inference runs the mixer after in_proj as one extension call: the same kernels, matmuls
    and per-image branch selection in the same order, so exactly the Python mixer's values (under bf16
    autocast too); never where autograd, a mask, float64 or another backend is in play."""
    from dyvm.kernels import mix_cpp

    torch.manual_seed(0)
    mixer = dyvm.create_model("dyvm_vim_tiny", img_size=32, patch_size=8, depth=2, embed_dim=32, num_classes=5,
                              pruning_loc=[1]).layers[0].mixer.eval()
    xz = torch.randn(3, 17, 2 * mixer.d_inner)
    calls = []
    real = mix_cpp.mix_forward
    monkeypatch.setattr(mix_cpp, "mix_forward", lambda *a: calls.append(a[-1]) or real(*a))
    cases = [None, torch.ones(3, 2), torch.zeros(3, 2), torch.tensor([[1., 0]] * 3), torch.tensor([[0., 1]] * 3),
             torch.tensor([[1., 0], [0, 1], [1, 1]]), torch.tensor([[0., 0], [0, 1], [0, 0]]),
             torch.tensor([[1., 1], [1, 0], [1, 1]])]
    with torch.no_grad():
        for gates in cases:
            calls.clear()
            fused = mixer.mix(xz, None, gates)
            assert len(calls) == 1, gates
            assert torch.equal(fused, _python_mix(mixer, monkeypatch, xz, None, gates)), gates
        # a skipped branch contributes exactly nothing: image 1 of the last case equals its forward-only run
        alone = mixer.mix(xz[1:2], None, torch.tensor([[1., 0]]))
        assert torch.allclose(mixer.mix(xz, None, cases[-1])[1:2], alone, rtol=0, atol=1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):     # as in the Python mixer: at D 32 every matmul of the
            calls.clear()                                      # mixer stays float32 on its panel, out_proj's too
            fused = mixer.mix(xz, None, cases[5])
            assert len(calls) == 1 and fused.dtype == torch.float32
            assert torch.equal(fused, _python_mix(mixer, monkeypatch, xz, None, cases[5]))
        calls.clear()
        mixer.mix(xz, torch.ones(3, 17, 1))                       # a mask: the training layout
        mixer.scan_backend = "torch"
        mixer.mix(xz)
        mixer.scan_backend = None
        mixer.double().mix(xz.double())                            # float64 weights
        mixer.float()
    grad_xz = xz.clone().requires_grad_(True)
    mixer.mix(grad_xz).sum().backward()                            # autograd: the Python mixer, gradients flow
    assert not calls and grad_xz.grad is not None and mixer.A_log.grad is not None


def logits_of(model, x, monkeypatch, fused=True):
    """model(x); with ``fused=False`` down the Python blocks (the extension's block and stack calls declined)."""
    from dyvm.models import vim as vim_mod

    with monkeypatch.context() as p:
        if not fused:
            p.setattr(vim_mod.BiMambaMixer, "fused_call", lambda *a, **k: None)
            p.setattr(vim_mod.VisionMamba, "fused_stack", lambda *a, **k: None)
        return model(x)


def test_branches_side_by_side_on_two_threads(monkeypatch):
    """With two threads a small fused block (the demo's at batch 1) runs its two SSM branches side by side, one per
    thread; a large one splits each kernel between the threads instead. Either way the logits are the Python blocks'
    and the one-thread run's exactly, for a Vim and for a DyVM whose routers turn branches off for some images."""
    side_by_side = torch.ops.dyvm_scan.directions_in_parallel
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    vim = dyvm.create_model("vim_tiny", img_size=28, patch_size=4, in_chans=1, depth=3, embed_dim=64,
                            num_classes=5).eval()
    dy = dyvm.create_model("dyvm_vim_tiny", img_size=28, patch_size=4, in_chans=1, depth=3, embed_dim=64,
                           num_classes=5, pruning_loc=[1, 2]).eval()
    for layer in dy.layers:  # routers with real decisions
        torch.nn.init.normal_(layer.mixer.block_head.weight, std=0.5)
    try:
        torch.set_num_threads(2)
        assert side_by_side(2 * 50 * 128) and not side_by_side(4 * 50 * 128) and side_by_side(8 * 5 * 128)
        torch.set_num_threads(1)
        assert not side_by_side(50 * 128)
        for batch in (1, 4):
            x = torch.randn(batch, 1, 28, 28)
            for model in (vim, dy):
                with torch.no_grad():
                    results = []
                    for n in (2, 1):
                        torch.set_num_threads(n)
                        results += [logits_of(model, x, monkeypatch), logits_of(model, x, monkeypatch, fused=False)]
                assert all(torch.equal(results[0], r) for r in results[1:]), (batch, type(model).__name__)
    finally:
        torch.set_num_threads(threads)


def test_fused_inference_follows_weight_changes(monkeypatch):
    """The fused inference paths remember each layer's A = -exp(A_log) between forwards; any change of the
    weights (in place, by load_state_dict, by a `.data` swap, by replacing the Parameter) is seen at the next
    forward: the logits stay exactly the Python blocks'."""
    from dyvm.models import vim as vim_mod

    torch.manual_seed(0)
    model = dyvm.create_model("vim_tiny", img_size=32, patch_size=8, depth=2, embed_dim=32, num_classes=5).eval()
    other = dyvm.create_model("vim_tiny", img_size=32, patch_size=8, depth=2, embed_dim=32, num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    mixer = model.layers[1].mixer

    def python_logits():
        with monkeypatch.context() as m:
            m.setattr(vim_mod.BiMambaMixer, "fused_call", lambda *a, **k: None)
            m.setattr(vim_mod.VisionMamba, "fused_stack", lambda *a, **k: None)
            return model(x)

    def new_out_proj():
        mixer.out_proj = torch.nn.Linear(mixer.d_inner, 32, bias=False)

    norm = model.layers[0].norm
    changes = [lambda: mixer.A_log.add_(0.3), lambda: mixer.A_b_log.mul_(0.5), lambda: mixer.out_proj.weight.mul_(3),
               lambda: model.load_state_dict(other.state_dict()),
               lambda: setattr(mixer.A_log, "data", mixer.A_log.data + 0.2),
               lambda: setattr(mixer, "A_b_log", torch.nn.Parameter(mixer.A_b_log.detach() - 0.2)),
               # what the model's remembered stack plan reads besides the derived tensors
               lambda: setattr(norm.weight, "data", norm.weight.data * 2), lambda: setattr(norm, "eps", 0.5),
               new_out_proj, lambda: model.layers[1].mixer.conv1d.bias.add_(1)]
    with torch.no_grad():
        before = model(x)
        assert torch.equal(before, python_logits())
        for change in changes:
            change()
            after = model(x)
            assert not torch.equal(after, before)
            assert torch.equal(after, python_logits())
            before = after
        plans = model._stack_plans
        assert plans  # the stack's arguments were remembered
        mixer.scan_backend = "reference"  # a backend the fused stack does not serve: the plan must not be used
        assert torch.allclose(model(x), before, atol=1e-5) and not plans[(False, False)].valid()
        mixer.scan_backend = None
        copied = copy.deepcopy(model)  # a copy makes its own plan, from its own weights
        copied.layers[1].mixer.in_proj.weight.mul_(2)
        assert not torch.equal(copied(x), before) and torch.equal(model(x), before)
    assert mixer._inference_cache  # the cache was used
    # the plan stamps only the parameters derived tensors are made from: every remembered tensor's source is one
    sources = mixer.derived_sources()
    assert all(any(entry[0] is t for t in sources) for entry in mixer._inference_cache.values())


def test_inference_mode_then_training():
    """A model evaluated under torch.inference_mode trains afterwards in the same process: the index constants and
    remembered tensors that inference made are never saved for backward (they were inference tensors: the first
    training step failed)."""
    torch.manual_seed(0)
    for name, kwargs in (("vim_tiny", {}), ("dyvm_vim_tiny", {"pruning_loc": [1]})):
        model = dyvm.create_model(name, img_size=28, patch_size=4, in_chans=1, depth=2, embed_dim=32, num_classes=5,
                                  **kwargs)
        x = torch.randn(2, 1, 28, 28)
        with torch.inference_mode():
            model.eval()(x)
        model.eval()
        x.requires_grad_(True)  # eval with autograd (saliency): the Python blocks, with what inference remembered
        logits = model(x)
        logits.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all(), name
        out = model.train()(x.detach())
        loss = (out.logits if hasattr(out, "logits") else out).sum()
        loss.backward()
        assert all(p.grad is not None for p in model.layers.parameters()), name


def test_remembered_stack_steps_aside_for_gradients():
    """With autograd on, a model whose remembered stack exists still gives a graph wherever any weight the stack
    reads requires a gradient, also one it keeps no derived copy of (the norms'), and the fused path otherwise."""
    torch.manual_seed(0)
    model = dyvm.create_model("vim_tiny", img_size=28, patch_size=4, in_chans=1, depth=2, embed_dim=32,
                              num_classes=5).eval()
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        fused = model(x)
    for p in model.parameters():
        p.requires_grad_(False)
    model.layers[1].norm.weight.requires_grad_(True)
    out = model(x)
    assert torch.allclose(out, fused, atol=1e-5)
    out.sum().backward()  # through the Python blocks: a real gradient for that weight
    grad = model.layers[1].norm.weight.grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    model.layers[1].norm.weight.requires_grad_(False)
    assert torch.equal(model(x), fused)  # nothing needs a gradient: the remembered stack again


def test_narrow_patches_embed_as_a_matmul():
    """Patches of at most 64 values (the demo's 4x4 grey ones) embed by one matmul instead of oneDNN's
    convolution: the convolution's values (to float rounding), gradients included, and the right patch order."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    for channels, patch, size in ((1, 4, 28), (3, 4, 30), (1, 8, 32)):
        model = dyvm.create_model("vim_tiny", img_size=size, patch_size=patch, in_chans=channels, depth=1,
                                  embed_dim=32, num_classes=5)
        proj, calls = model.patch_embed.proj, []
        proj.register_forward_pre_hook(lambda *a: calls.append(1))
        x = torch.randn(3, channels, size, size, requires_grad=True)
        ours = model.patch_embed(x)
        assert not calls  # the matmul route, not the convolution module
        conv = F.conv2d(x, proj.weight, proj.bias, stride=patch).flatten(2).transpose(1, 2)
        assert ours.shape == conv.shape == (3, (size // patch) ** 2, 32)
        assert torch.allclose(ours, conv, atol=1e-6)
        g = torch.randn_like(ours)
        grads = torch.autograd.grad(ours, (x, proj.weight), g)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, torch.autograd.grad(conv, (x, proj.weight), g)))


def test_evaluation_after_fused_optimiser_steps_reads_fresh_weights():
    """torch's fused AdamW (dyvm train's optimiser) updates the parameters without bumping their version counters:
    an evaluation after training steps in the same process must still use the new weights' A, packs and panels
    (train() / eval() forget them), giving a fresh copy's logits exactly; before the fix it gave stale ones."""
    from dyvm.engine import make_optimizer

    torch.manual_seed(0)
    for name, kwargs in (("vim_tiny", dict(embed_dim=32, depth=2)), ("vim_tiny", dict(depth=2)),
                         ("dyvm_vim_tiny", dict(embed_dim=32, depth=3, pruning_loc=[1, 2]))):
        model = dyvm.create_model(name, img_size=32, patch_size=8, num_classes=5, **kwargs)
        optimizer = make_optimizer(list(model.parameters()), lr=0.05, weight_decay=0.0)
        assert optimizer.defaults.get("fused")
        x = torch.randn(4, 3, 32, 32)
        with torch.no_grad():
            before = model.eval()(x)  # derives A, packs and panels of the initial weights
        versions = [p._version for p in model.parameters()]
        model.train()
        for _ in range(2):
            out = model(x)
            (out if torch.is_tensor(out) else out.logits).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        assert [p._version for p in model.parameters()] == versions  # why the version check alone cannot see it
        fresh = dyvm.create_model(name, img_size=32, patch_size=8, num_classes=5, **kwargs).eval()
        fresh.load_state_dict(model.state_dict())
        with torch.no_grad():
            after = model.eval()(x)
            assert not torch.allclose(after, before, atol=1e-3)
            assert torch.equal(after, fresh(x)), name


def test_packed_projections_at_inference(monkeypatch):
    """Where in_proj and out_proj are large (Vim-T's width), eager CPU fp32 inference runs them on oneDNN with each
    weight packed once: the fused and the Python blocks give identical logits, within float rounding of F.linear's;
    the packs follow weight changes; a model that ran still copies and pickles (the packs are left out); under bf16
    autocast the packs are bf16 and the fused blocks still equal the Python ones (autocast's own matmuls); small
    projections (the demo's width at batch 1) keep torch's matmul."""
    import copy
    import io

    import torch.nn.functional as F
    from dyvm.kernels import mix_cpp

    pays = torch.ops.dyvm_scan.packed_linear_pays
    assert pays(1, 192, 768) and pays(64, 384, 192) and not pays(63, 384, 192) and not pays(50, 64, 256)
    assert pays(1024, 64, 256) and not pays(1023, 64, 256)
    torch.manual_seed(0)
    model = dyvm.create_model("vim_tiny", img_size=64, patch_size=8, depth=2, num_classes=5).eval()  # D 192
    x = torch.randn(4, 3, 64, 64)  # 4 x 65 rows: both projections on the packed weights

    def run(m, fused=True):
        return logits_of(m, x, monkeypatch, fused)

    def unpacked():  # F.linear's route: a copy (no packs) that packs nothing
        with monkeypatch.context() as p:
            p.setattr(mix_cpp, "pack_weight", lambda w, dtype=None: None)
            return run(copy.deepcopy(model))

    with torch.no_grad():
        packed = run(model)
        cache = model.layers[1].mixer._inference_cache
        assert cache["in_proj_packed"][3].is_mkldnn and cache["out_proj_packed"][3].is_mkldnn
        assert torch.equal(packed, run(model, fused=False))
        assert torch.allclose(packed, unpacked(), rtol=1e-5, atol=1e-5)
        model.layers[1].mixer.in_proj.weight.mul_(1.5)
        model.layers[0].mixer.out_proj.weight.mul_(-1)
        after = run(model)
        assert not torch.allclose(after, packed, atol=1e-3)
        assert torch.allclose(after, unpacked(), rtol=1e-5, atol=1e-5)
        assert torch.equal(after, run(model, fused=False))
        torch.save(model, io.BytesIO())
        assert torch.equal(copy.deepcopy(model)(x), after)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 packs: autocast's values, no per-forward cast
            low = run(model)
            assert cache["in_proj_packed_bf16"][3].dtype == torch.bfloat16
            assert torch.equal(low, run(model, fused=False))
        with torch.autocast("cpu", dtype=torch.float16):
            assert model.layers[0].mixer.packed_projections() == (None, None)
        rows, w = torch.randn(260, 192), model.layers[0].mixer.in_proj.weight
        pack = mix_cpp.pack_weight(w)
        assert torch.equal(mix_cpp.linear(rows, w, pack), torch.ops.mkldnn._linear_pointwise(rows, pack, None, "none",
                                                                                             [], ""))
        small, w_small = torch.randn(3, 50, 64), torch.randn(256, 64)
        assert torch.equal(mix_cpp.linear(small, w_small, mix_cpp.pack_weight(w_small)), F.linear(small, w_small))


def test_panel_matmuls_at_inference(monkeypatch):
    """At eager CPU fp32 inference x_proj and dt_proj (and in_proj / out_proj where their weights are small) run on
    weight panels laid out once: within float rounding of F.linear, each row's values independent of the other rows
    and of the thread count, the fused and the Python blocks identical, the panels following weight changes, under
    CPU autocast the same float32 panels (a small model's mixer then computes exactly what it computes in float32; a
    large in_proj / out_proj runs on 16-bit oneDNN packs), and a clear error for a panel of the wrong weight."""
    import copy

    import torch.nn.functional as F
    from dyvm.kernels import mix_cpp
    from dyvm.models import vim as vim_mod

    torch.manual_seed(0)
    for rows, k, n in ((197, 384, 44), (50, 12, 384), (2, 64, 256), (13, 100, 17), (7, 5, 3)):
        x, w = torch.randn(rows, k), torch.randn(n, k)
        y = mix_cpp.panel_linear(x, mix_cpp.weight_panel(w), n)
        ref = (x.double() @ w.double().t()).float()
        assert y.shape == (rows, n) and torch.allclose(y, ref, rtol=1e-5, atol=1e-5 * k ** 0.5)
        alone = torch.stack([mix_cpp.panel_linear(x[i:i + 1], mix_cpp.weight_panel(w), n)[0] for i in range(rows)])
        assert torch.equal(y, alone)  # rows are tiled 6 at a time; each sums its products in the same order
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            assert torch.equal(mix_cpp.panel_linear(x, mix_cpp.weight_panel(w), n), y)
        finally:
            torch.set_num_threads(threads)
    # a strided input (dt_proj reads the first R columns of x_proj's output) and leading dimensions
    xdbl = torch.randn(2, 9, 44)
    w = torch.randn(384, 12)
    assert torch.allclose(mix_cpp.panel_linear(xdbl[..., :12], mix_cpp.weight_panel(w), 384), F.linear(xdbl[..., :12], w),
                          rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="panel_linear: panel must be"):
        mix_cpp.panel_linear(torch.randn(3, 12), mix_cpp.weight_panel(torch.randn(384, 11)), 384)

    model = dyvm.create_model("vim_tiny", img_size=32, patch_size=8, depth=2, embed_dim=32, num_classes=5).eval()
    x = torch.randn(3, 3, 32, 32)

    def run(m, fused=True):
        return logits_of(m, x, monkeypatch, fused)

    def unpaneled():  # F.linear's route: a copy without panels
        with monkeypatch.context() as p:
            p.setattr(vim_mod.BiMambaMixer, "all_panels", lambda self: [])
            p.setattr(vim_mod.BiMambaMixer, "_panels", lambda self, backward, x: None)
            p.setattr(vim_mod.BiMambaMixer, "projection_panel", lambda self, name: None)
            return run(copy.deepcopy(model))

    with torch.no_grad():
        out = run(model)
        mixer = model.layers[1].mixer
        assert len(mixer.all_panels()) == 6  # D 32: in_proj and out_proj are small, so they have panels too
        assert {"x_proj_panel", "dt_proj_b_panel", "in_proj_panel", "out_proj_panel"} <= set(mixer._inference_cache)
        assert torch.equal(out, run(model, fused=False))
        assert torch.allclose(out, unpaneled(), rtol=1e-5, atol=1e-5)
        first = model.layers[0].mixer
        first.x_proj_b.weight.mul_(3)
        first.dt_proj.weight.mul_(-2)
        mixer.in_proj.weight.mul_(2)
        after = run(model)
        assert not torch.allclose(after, out, rtol=1e-3, atol=1e-4)
        assert torch.allclose(after, unpaneled(), rtol=1e-5, atol=1e-5)  # a stale panel would fail here
        assert torch.equal(after, run(model, fused=False))
        u = torch.randn(3, 17, 32)
        plain = mixer(u)
        for dtype in (torch.bfloat16, torch.float16):
            with torch.autocast("cpu", dtype=dtype):  # every panel stays float32, in_proj's and out_proj's too (D 32)
                kept = mixer.all_panels()
                assert len(kept) == 6 and all(t.dtype == torch.float32 for t in kept)
                assert torch.equal(kept[2], mixer.ssm_panels(True)[0])
                low = run(model)
                assert torch.equal(low, run(model, fused=False))
                # the mixer's matmuls all run float32 on panels: exactly float32's values, fused and in Python
                assert torch.equal(mixer(u), plain)
                with monkeypatch.context() as p:
                    p.setattr(vim_mod.BiMambaMixer, "fused_call", lambda *a, **k: None)
                    assert torch.equal(mixer(u), plain)
                features = model.forward_features(x).hidden  # float32 (the final norm's), finer than 16-bit logits
                with monkeypatch.context() as p:  # 16-bit matmuls (autocast's): close, not equal
                    p.setattr(vim_mod.BiMambaMixer, "all_panels", lambda self: [])
                    p.setattr(vim_mod.BiMambaMixer, "_panels", lambda self, backward, x: None)
                    p.setattr(vim_mod.BiMambaMixer, "projection_panel", lambda self, name: None)
                    cast = copy.deepcopy(model).forward_features(x).hidden
                    assert not torch.equal(cast, features) and torch.allclose(cast, features, rtol=0.1, atol=0.1)
    big = dyvm.create_model("vim_small", img_size=32, patch_size=16, depth=1, num_classes=5).eval()
    big_mixer = big.layers[0].mixer
    assert len(big_mixer.all_panels()) == 4  # D 384: oneDNN's packs serve in_proj and out_proj
    u = torch.randn(2, 5, 384)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert len(big_mixer.all_panels()) == 4
        assert big_mixer.project_in(u).dtype == torch.bfloat16  # in 16 bits on the bf16 pack, as autocast lowers it
        assert torch.equal(big_mixer.project_in(u), F.linear(u, big_mixer.in_proj.weight))


@pytest.mark.parametrize("with_residual,dtype", [(True, torch.float32), (False, torch.float32),
                                                  (True, torch.bfloat16)])
def test_training_add_and_rms_norm_in_one_node_match_float64_autograd(with_residual, dtype):
    """In training the block's residual add and RMSNorm are one autograd node (norm.add_rms_norm_for_training: one
    pass of the extension forward and one backward): its outputs and the gradients of hidden, residual and weight
    agree with float64 autograd through ATen's composed ops, for both outputs' gradients, with and without a residual,
    and with a 16-bit hidden (bf16 autocast's mixer output); Block.add_norm takes it in training."""
    from dyvm.kernels import norm
    from dyvm.models.vim import BiMambaMixer, Block

    torch.manual_seed(0)
    shape = (3, 29, 64)
    hidden = (torch.randn(shape) * 2).to(dtype)
    residual = torch.randn(shape) if with_residual else None
    weight = torch.rand(64) + 0.5
    g_out, g_res = torch.randn(shape), torch.randn(shape)
    results = []
    for reference in (False, True):
        h = (hidden.double() if reference else hidden.clone()).requires_grad_()
        r = None if residual is None else (residual.double() if reference else residual.clone()).requires_grad_()
        w = (weight.double() if reference else weight.clone()).requires_grad_()
        if reference:
            res = h if r is None else r + h
            out = res * torch.rsqrt(res.square().mean(-1, keepdim=True) + 1e-5) * w
        else:
            out, res = norm.add_rms_norm_for_training(h, r, w, 1e-5)
            assert type(out.grad_fn).__name__ == "_AddRMSNormBackward" and out.dtype == res.dtype == torch.float32
        ((out * g_out.to(out.dtype)).sum() + (res * g_res.to(res.dtype)).sum()).backward()
        results.append((out, res, h.grad, None if r is None else r.grad, w.grad))
    for i, (got, want) in enumerate(zip(*results)):
        assert (got is None) == (want is None)
        if want is not None:  # a 16-bit hidden's gradient is rounded to 16 bits (index 2)
            tol = 1e-2 if i == 2 and dtype != torch.float32 else 1e-5
            torch.testing.assert_close(got.double(), want.double(), rtol=tol, atol=tol * want.abs().max().item())
    # the gradient of the normed output alone (the residual unused) and of the residual alone (the norm unused)
    h, w = hidden.float().requires_grad_(), weight.clone().requires_grad_()
    norm.add_rms_norm_for_training(h, None, w, 1e-5)[0].sum().backward()
    assert h.grad is not None and w.grad is not None
    h.grad = None
    norm.add_rms_norm_for_training(h, residual, w, 1e-5)[1].sum().backward()
    assert torch.equal(h.grad, torch.ones(shape))

    block = Block(64, BiMambaMixer(64)).train()
    normed, _ = block.add_norm(hidden.float().requires_grad_(), residual)
    assert type(normed.grad_fn).__name__ == "_AddRMSNormBackward"
    with torch.no_grad():
        assert norm.add_rms_norm_for_training(hidden, residual, weight, 1e-5) is None  # no autograd: not served
    with pytest.raises(RuntimeError, match="rms_norm_backward: weight must be"):
        torch.ops.dyvm_scan.rms_norm_backward(g_out, g_res, torch.rand(63), 1e-5, None)
    with pytest.raises(RuntimeError, match="rms_norm_backward: grad_out must be"):
        torch.ops.dyvm_scan.rms_norm_backward(g_out[:2], g_res, weight, 1e-5, None)


def test_rms_norm_in_one_pass_at_inference(monkeypatch):
    """At eager CPU fp32 inference RMSNorm (and the block's residual add before it) is one pass of the extension:
    within float rounding of ATen's RMSNorm, each row independent of the batch and the threads, the same values in
    the fused blocks and in the Python RMSNorm (fused == Python), ATen's calls in training, and clear errors."""
    from dyvm.kernels import mix_cpp, norm

    def aten(x, w, eps):
        xf = x.double()
        return (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps) * w.double()).float()

    torch.manual_seed(0)
    for shape in ((1, 50, 64), (3, 197, 192), (2, 7, 37), (5, 16)):
        x, r, w = torch.randn(shape) * 3, torch.randn(shape), torch.rand(shape[-1]) + 0.5
        out, res = mix_cpp.add_rms_norm(x, r, w, 1e-5)
        assert torch.equal(res, r + x)  # the one float32 add
        assert torch.allclose(out, aten(r + x, w, 1e-5), rtol=1e-6, atol=1e-6)
        alone, same = mix_cpp.add_rms_norm(x, None, w, 1e-5)
        assert same.data_ptr() == x.data_ptr() and torch.allclose(alone, aten(x, w, 1e-5), rtol=1e-6, atol=1e-6)
        rows = x.reshape(-1, shape[-1])
        one_by_one = torch.cat([mix_cpp.add_rms_norm(rows[i:i + 1], None, w, 1e-5)[0] for i in range(len(rows))])
        assert torch.equal(one_by_one.view(shape), alone)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            assert torch.equal(mix_cpp.add_rms_norm(x, r, w, 1e-5)[0], out)
        finally:
            torch.set_num_threads(threads)
    x, w = torch.randn(4, 9, 64), torch.rand(64)
    strided = torch.randn(4, 9, 128)[..., ::2]
    assert torch.equal(mix_cpp.add_rms_norm(strided, None, w, 1e-5)[0], mix_cpp.add_rms_norm(strided.contiguous(), None, w,
                                                                                              1e-5)[0])
    with torch.no_grad():
        assert torch.equal(norm.rms_norm(x, w), mix_cpp.add_rms_norm(x, None, w, 1e-5)[0])
        module = norm.RMSNorm(64).eval()
        program = torch.export.export(module, (x,))  # traced: the op dyvm::rms_norm, eager's values
        assert "dyvm.rms_norm" in str(program.graph) and torch.equal(program.module()(x), module(x))
    wg = w.clone().requires_grad_()
    trained = norm.rms_norm(x, wg)  # autograd: ATen's calls, with a gradient
    trained.sum().backward()
    assert wg.grad is not None and torch.allclose(trained, aten(x, w, 1e-5), rtol=1e-6, atol=1e-6)
    assert norm.rms_norm(x.double(), w.double()).dtype == torch.float64  # float64 stays (ATen's calls)
    with pytest.raises(RuntimeError, match="add_rms_norm: weight must be"):
        mix_cpp.add_rms_norm(x, None, torch.rand(63), 1e-5)
    with pytest.raises(RuntimeError, match="add_rms_norm: residual must be"):
        mix_cpp.add_rms_norm(x, torch.randn(4, 9, 32), w, 1e-5)

    # the blocks: a hook on RMSNorm sends a block down the Python path, which must give the fused values
    model = dyvm.create_model("vim_tiny", img_size=32, patch_size=8, depth=2, embed_dim=32, num_classes=5).eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        fused = model(images)
        handle = model.layers[1].norm.register_forward_hook(lambda m, args, out: None)
        python = model(images)
        handle.remove()
        with monkeypatch.context() as p:  # ATen's RMSNorm everywhere (the extension refused): rounding apart
            p.setattr(mix_cpp, "norm_applies", lambda x, w: False)
            p.setattr(model, "fused_stack", lambda *a, **k: None)
            for layer in model.layers:
                p.setattr(layer, "fused_forward", lambda *a, **k: None)
            aten_logits = model(images)
    assert torch.equal(python, fused)
    assert torch.allclose(aten_logits, fused, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dim, autocast_dtype", [(32, torch.float32), (256, torch.bfloat16)])
def test_fused_blocks_equal_the_python_blocks(monkeypatch, dim, autocast_dtype):
    """At eager CPU fp32 inference each block (residual add, RMSNorm, in_proj, mixer) is one extension call;
    every layer's hidden state and residual and the logits equal the Python blocks' exactly, under bf16 autocast
    too, where a small out_proj (D 32) stays float32 on its panel and a large one (D 256) runs in bf16."""
    from dyvm.models import vim as vim_mod

    torch.manual_seed(0)
    model = dyvm.create_model("vim_tiny", img_size=32, patch_size=8, depth=3, embed_dim=dim, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    calls = []
    real = vim_mod.Block.fused_forward
    monkeypatch.setattr(vim_mod.Block, "fused_forward", lambda *a: calls.append(1) or real(*a))
    fused_call = vim_mod.BiMambaMixer.fused_call
    for autocast in (False, True):
        monkeypatch.setattr(vim_mod.BiMambaMixer, "fused_call", fused_call)
        calls.clear()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            fused = model.forward_detailed(x, return_layers=True)
            assert len(calls) == 3
            monkeypatch.setattr(vim_mod.BiMambaMixer, "fused_call", lambda *a, **k: None)
            python = model.forward_detailed(x, return_layers=True)
        assert torch.equal(fused.logits, python.logits)
        for a, b in zip(fused.layer_hidden + fused.layer_residual, python.layer_hidden + python.layer_residual):
            assert torch.equal(a, b)
    assert fused.layer_hidden[0].dtype == autocast_dtype


def test_forward_hooks_fire_at_fused_inference():
    """A forward hook on a module the Python block calls (RMSNorm, the mixer, in_proj, the router) still
    fires at eager CPU inference: the fused path steps aside, with the same logits."""
    torch.manual_seed(0)
    model = dyvm.create_model("dyvm_vim_tiny", img_size=32, patch_size=8, depth=3, embed_dim=32, num_classes=5,
                              pruning_loc=[1, 2]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
    for module in (model.layers[1].norm, model.layers[1].mixer.in_proj, model.layers[2].mixer.block_head,
                   model.score_predictors[1].in_conv[1]):
        seen = []
        handle = module.register_forward_hook(lambda m, args, out: seen.append(out.shape))
        with torch.no_grad():
            hooked = model(x)
        handle.remove()
        assert len(seen) == 1 and torch.equal(hooked, plain), module
    vim = dyvm.create_model("vim_tiny", img_size=32, patch_size=8, depth=3, embed_dim=32, num_classes=5).eval()
    with torch.no_grad():
        plain_vim = vim(x)
    seen = []
    handle = vim.layers[2].register_forward_hook(lambda m, args, out: seen.append(out[0].shape))  # a Vim block
    with torch.no_grad():
        hooked = vim(x)
    handle.remove()
    assert len(seen) == 1 and torch.equal(hooked, plain_vim)
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, args, out: seen.append(type(m)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    assert seen.count(torch.nn.Linear) >= 3 * 2  # every layer's in_proj and router


def test_fused_mixer_op_rejects_bad_input():
    from dyvm.kernels import mix_cpp

    mixer = dyvm.create_model("vim_tiny", img_size=32, patch_size=8, depth=1, embed_dim=32).layers[0].mixer
    params = mixer._direction_params(False) + mixer._direction_params(True)
    with torch.no_grad(), pytest.raises(RuntimeError, match="xz must be a \\(B, L, 2E\\) float32"):
        mix_cpp.mix_forward(torch.randn(17, 2 * mixer.d_inner), params[:7], params[7:], mixer.out_proj.weight,
                            0.5)
    with torch.no_grad(), pytest.raises(RuntimeError, match="7 tensors per direction"):
        mix_cpp.mix_forward(torch.randn(1, 17, 2 * mixer.d_inner), params[:6], params[7:], mixer.out_proj.weight,
                            0.5)
    with torch.no_grad(), pytest.raises(RuntimeError, match="gates must be \\(B, 2\\)"):
        mix_cpp.mix_forward(torch.randn(2, 17, 2 * mixer.d_inner), params[:7], params[7:], mixer.out_proj.weight,
                            0.5, torch.ones(3, 2))


def test_narrow_linear_matches_linear_in_values_and_gradients():
    # dt_proj's product with its backward in the transposed orientation: the same values and gradients as
    # F.linear on the mixer's strided slice of x_proj's output, for input and weight
    from dyvm.kernels.mixer_ops import narrow_linear

    gen = torch.Generator().manual_seed(0)
    x_dbl = torch.randn(3, 11, 4 + 2 * 16, generator=gen, dtype=torch.float64)
    weight = torch.randn(24, 4, generator=gen, dtype=torch.float64)
    grad = torch.randn(3, 11, 24, generator=gen, dtype=torch.float64)
    results = []
    for fn in (narrow_linear, torch.nn.functional.linear):
        x, w = x_dbl.clone().requires_grad_(), weight.clone().requires_grad_()
        out = fn(x[..., :4], w)
        out.backward(grad)
        results.append((out.detach(), x.grad, w.grad))
    (out, dx, dw), (ref, rdx, rdw) = results
    assert torch.equal(out, ref)
    torch.testing.assert_close(dx, rdx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dw, rdw, rtol=1e-12, atol=1e-12)
    assert dx[..., 4:].abs().max() == 0 and dw.is_contiguous()
    torch.autograd.gradcheck(narrow_linear, (x_dbl[..., :4].clone().requires_grad_(), weight.clone().requires_grad_()))


def test_weight_grad_splits_rows_across_threads_with_the_products_values():
    # in_proj's, out_proj's and x_proj's weight gradients in float32 training: grad (M, out)^T x (M, in) with the M
    # rows split across the threads (each part on one thread, summed in thread order) from 2048 rows, one mm below;
    # the same values as torch.mm up to float rounding, at every thread count; strided operands (x_proj's input is a
    # view of channel-last memory)
    ops = torch.ops.dyvm_scan
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    try:
        for n, rows in ((1, 6400), (2, 6400), (3, 5000), (2, 2047), (2, 2048)):
            torch.set_num_threads(n)
            grad = torch.randn(rows, 36, generator=gen)
            x = torch.randn(rows, 3, 128, generator=gen)[:, 1]                     # rows strided by 384
            want = (grad.double().t() @ x.double()).float()
            got = ops.weight_grad(grad, x)
            assert got.shape == (36, 128) and got.is_contiguous()
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
            assert torch.equal(ops.weight_grad(grad, x), got)                         # deterministic
            x.requires_grad_()                                                        # a saved activation
            torch.testing.assert_close(ops.weight_grad(grad, x), got, rtol=0, atol=0)
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(RuntimeError, match="weight_grad: grad \\(M, out\\) and input \\(M, in\\) must be 2-D"):
        ops.weight_grad(torch.randn(10, 4), torch.randn(11, 8))
    with pytest.raises(RuntimeError, match="weight_grad: grad and input must share a dtype"):
        ops.weight_grad(torch.randn(10, 4), torch.randn(10, 8, dtype=torch.float64))


def test_projection_node_matches_linear_in_values_and_gradients():
    # in_proj / out_proj in float32 CPU training take one node whose weight gradient is weight_grad: the same output
    # as F.linear, the same input gradient, the weight gradient up to float rounding; it steps aside (plain F.linear)
    # under autocast, without grad, and for non-contiguous inputs
    from dyvm.kernels.mixer_ops import projection

    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(64, 50, 64, generator=gen)
    w0 = torch.randn(256, 64, generator=gen) / 8
    grad = torch.randn(64, 50, 256, generator=gen)
    results = []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)                                                    # weight_grad splits from 2 threads
    try:
        for fn in (projection, torch.nn.functional.linear):
            x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
            out = fn(x, w)
            out.backward(grad)
            results.append((out.detach(), x.grad, w.grad, out.grad_fn.name()))
    finally:
        torch.set_num_threads(threads)
    (out, dx, dw, node), (ref, rdx, rdw, _) = results
    assert node == "_LinearNoBiasBackward"
    assert torch.equal(out, ref) and torch.equal(dx, rdx)
    torch.testing.assert_close(dw, rdw, rtol=1e-5, atol=1e-5 * rdw.abs().max().item())
    x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert projection(x, w).grad_fn.name() != "_LinearNoBiasBackward"
    assert projection(x.transpose(0, 1), w).grad_fn.name() != "_LinearNoBiasBackward"
    with torch.no_grad():
        assert torch.equal(projection(x, w), ref)


def graph_nodes(out: torch.Tensor, name: str) -> int:
    """How many autograd nodes named ``name`` the graph behind ``out`` holds."""
    nodes, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in nodes:
            nodes.add(node)
            stack.extend(n for n, _ in node.next_functions)
    return sum(type(n).__name__ == name for n in nodes)


def fused_branch_nodes(out: torch.Tensor) -> int:
    """How many SSM directions the graph behind ``out`` runs in fused nodes: one per ``_SSMBranchCpp`` (one
    direction), two per ``_BiSSMCpp`` (both directions of a mixer)."""
    return graph_nodes(out, "_SSMBranchCppBackward") + 2 * graph_nodes(out, "_BiSSMCppBackward")


@pytest.mark.skipif("cpp" not in available_backends(), reason="needs the C++ scan kernel")
@pytest.mark.parametrize("threads,routed,masked", [(1, False, False), (2, False, False), (2, True, False),
                                                    (2, True, True)])
def test_training_mixer_runs_both_directions_in_one_node_with_the_branch_nodes_values(monkeypatch, threads, routed,
                                                                                      masked):
    # a float32 training mixer runs both directions as one node (scan_cpp._BiSSMCpp), whose second direction adds
    # its output, x gradient and z gradient in the kernels' stores, with a DyVM router's 0/1 gates applied per image
    # there and their gradients summed in the scan's backward, and DyVM's keep mask (the paper's layout) in the convs
    # with its gradient; the two per-direction nodes summed (gated_sum) by ATen, the path with the node turned off,
    # give the same output and gradients: the same float sums, the gates' and the mask's gradients up to the order of
    # their sums
    from dyvm.kernels import scan_cpp
    from dyvm.models.vim import BiMambaMixer

    torch.manual_seed(0)
    mixer = BiMambaMixer(64, router=routed)
    mixer.scan_backend = "cpp"
    x = torch.randn(3, 29, 64)
    weight = torch.randn(3, 29, 64)
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0], [-2.0, 1.0]])              # one image with a branch off each
    keep = (torch.rand(3, 29, 1) > 0.3).float()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    results = []
    try:
        for one_node in (True, False):
            if not one_node:
                monkeypatch.setattr(scan_cpp, "bi_ssm_cpp_applies", lambda *args: False)
            mixer.zero_grad(set_to_none=True)
            xi = x.clone().requires_grad_()
            lg = logits.clone().requires_grad_()
            # straight-through 0/1 gates, as the router's in training
            gates = ((lg > 0).float() - torch.sigmoid(lg)).detach() + torch.sigmoid(lg) if routed else None
            mask = keep.clone().requires_grad_() if masked else None
            out = mixer(xi, mask=mask, gates=gates)
            (out * weight).sum().backward()
            assert graph_nodes(out, "_BiSSMCppBackward") == int(one_node)
            assert fused_branch_nodes(out) == 2
            results.append([out.detach(), xi.grad] + [p.grad for p in mixer.parameters()]
                           + [mask.grad if masked else None, lg.grad])
    finally:
        torch.set_num_threads(previous)
    for i, (got, ref) in enumerate(zip(*results)):
        assert (got is None) == (ref is None)
        if ref is not None:
            if i < len(results[0]) - 2:
                torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
            else:  # the mask's and the gates' gradients: sums over E (and L) in another order
                torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert not routed or results[0][-1].abs().min() > 0
    assert not masked or results[0][-2].abs().max() > 0


@pytest.mark.skipif("cpp" not in available_backends(), reason="needs the C++ scan kernel")
def test_fused_ssm_branch_trains_like_the_composed_ops_in_float64():
    # training with the cpp scan on float32 runs each direction's x_proj → dt_proj → scan as one node
    # (mixer_ops.ssm_branch), whose backward fills x_proj's output gradient in one buffer and adds x_proj's
    # input gradient into the scan's in place; split_xz hands each branch its own (x, z) pair and sums their
    # gradients into one buffer. Output and every gradient must match a float64 run of the same mixer,
    # which takes the composed ops (F.linear, split, narrow_linear, the scan).
    from dyvm.models.vim import BiMambaMixer

    torch.manual_seed(0)
    mixer = BiMambaMixer(32)
    mixer.scan_backend = "cpp"
    x = torch.randn(3, 21, 32)
    weight = torch.randn(3, 21, 32)
    results = []
    for dtype in (torch.float32, torch.float64):
        m = mixer.to(dtype)
        m.zero_grad(set_to_none=True)
        xi = x.to(dtype, copy=True).requires_grad_()
        out = m(xi)
        (out * weight.to(dtype)).sum().backward()
        fused = fused_branch_nodes(out)
        assert fused == (2 if dtype == torch.float32 else 0)
        results.append([out.detach(), xi.grad] + [p.grad for p in m.parameters()])
    for got, ref in zip(*results):
        assert (got is None) == (ref is None)  # the router's head has no gradient without gates
        if ref is not None:
            # float32 rounding: ~5e-7 of each tensor's largest value here
            torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.skipif("cpp" not in available_backends(), reason="needs the C++ scan kernel")
def test_fused_ssm_branch_keeps_its_projections_float32_under_cpu_autocast():
    # bf16 autocast training takes the same fused node per direction, with x_proj and dt_proj in float32 inside it
    # (as at inference): the mixer's graph holds both nodes, and one direction's output and gradients under
    # autocast are those of the same call without it, exactly
    from dyvm.kernels.mixer_ops import ssm_branch
    from dyvm.models.vim import BiMambaMixer

    torch.manual_seed(0)
    mixer = BiMambaMixer(32)
    mixer.scan_backend = "cpp"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mixer(torch.randn(2, 13, 32, requires_grad=True))
    assert fused_branch_nodes(out) == 2

    E, L = mixer.d_inner, 13
    u0 = torch.randn(2, L, E).transpose(1, 2)  # (B, E, L) channel-last, as the conv hands it over
    z0 = torch.randn(2, L, E).transpose(1, 2)
    grad = torch.randn(2, E, L)
    results = []
    for autocast in (True, False):
        u = u0.clone().requires_grad_()  # clone keeps the channel-last strides
        weights = [mixer.x_proj.weight.detach().clone().requires_grad_(),
                   mixer.dt_proj.weight.detach().clone().requires_grad_()]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = ssm_branch(u, *weights, mixer.dt_proj.bias.detach(), -mixer.A_log.detach().exp(), mixer.D.detach(),
                           z0, 16, False, backend="cpp")
            assert y.dtype == torch.float32
        y.backward(grad)
        results.append((y.detach(), u.grad, *(w.grad for w in weights)))
    for got, ref in zip(*results):
        assert torch.equal(got, ref)


@pytest.mark.parametrize("channels,patch,size", [(1, 4, 30), (3, 8, 32)])  # narrow patches (one matmul), convolved ones
def test_whole_forward_in_one_call_equals_the_split_path(monkeypatch, channels, patch, size):
    """At eager CPU inference a Vim's eval forward is one extension call (input check, patch embedding, class token,
    pos_embed, blocks, final norm, head): exactly the logits of the path with Python around the stacked blocks, in
    float32 and under bf16 autocast. It steps aside for hooks, 16-bit images and autograd, and images with NaN still
    raise the usual ValueError."""
    from dyvm.kernels import mix_cpp

    torch.manual_seed(0)
    model = dyvm.create_model("vim_tiny", img_size=size, patch_size=patch, in_chans=channels, depth=3, embed_dim=32,
                              num_classes=5).eval()
    images = torch.randn(3, channels, size, size)
    calls, op = [], mix_cpp.forward_logits
    monkeypatch.setattr(mix_cpp, "forward_logits", lambda *a, **k: calls.append(1) or op(*a, **k))
    with torch.no_grad():
        fused = model(images)
        assert calls == [1]
        hook = model.head.register_forward_hook(lambda *a: None)
        split = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            split_bf16 = model(images)
            hook.remove()
            fused_bf16 = model(images)
            model(images.bfloat16())  # 16-bit images: the split path
        assert calls == [1, 1]
        assert torch.equal(fused, split)
        assert fused_bf16.dtype == torch.bfloat16 and torch.equal(fused_bf16, split_bf16)
        bad = images.clone()
        bad[1, 0, 2, 3] = float("nan")
        with pytest.raises(ValueError, match="NaN or Inf"):
            model(bad)
        with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
            model(images[0])
    assert calls == [1, 1, 1]
    model(images)  # autograd on and parameters that want gradients: the Python path
    assert calls == [1, 1, 1]
