"""DyVM: parity with the official implementation (eval and train with replayed noise), the
train ≡ inference property, branch skipping, knobs and bad input."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dyvm
from conftest import available_backends


def oracle_model(o, backend=None):
    model = dyvm.create_model("dyvm_vim_small", **o["config"])
    model.load_state_dict(o["state_dict"], strict=True)
    model.set_scan_backend(backend)
    return model


@pytest.mark.parametrize("backend", available_backends())
def test_eval_matches_official_oracle(oracle, backend):
    e = oracle("dyvm_small_eval")
    model = oracle_model(e, backend).eval()
    with torch.no_grad():
        out = model.forward_inference(e["input"], return_layers=True)
    assert (out.logits - e["logits"]).abs().max() < 1e-5
    assert torch.equal(out.gates, e["block_policy"].squeeze(2))
    assert (out.router_logits - e["block_logits"].squeeze(2)).abs().max() < 1e-5
    assert out.cls_positions == e["cls_token_position"]
    for k in range(3):
        assert torch.equal(out.keep_indices_local[k], e["keep_idx_local"][k])
        assert torch.equal(out.keep_indices[k], e["keep_idx_orig"][k])
        assert (out.pred_scores[k] - e["pred_scores"][k]).abs().max() < 1e-5
    for i in range(4):  # intermediate states (|values| up to 13): fp32 rounding, rtol + atol
        assert torch.allclose(out.layer_hidden[i], e["layer_hidden"][i], rtol=1e-5, atol=1e-5)
        assert torch.allclose(out.layer_residual[i], e["layer_residual"][i], rtol=1e-5, atol=1e-5)


def replay_noise(t):
    """The oracle's recorded Exp(1) draws in the official order: per layer, the token sampler
    (at a pruning layer), then the router's two draws."""
    draws = []
    for i in range(t["config"]["depth"]):
        if i in t["config"]["pruning_loc"]:
            draws.append(t["token_exp_noise"][t["config"]["pruning_loc"].index(i)])
        draws += [t["block_exp_noise1"][i], t["block_exp_noise2"][i]]
    it = iter(draws)
    return lambda shape, device: next(it).reshape(shape)


@pytest.mark.parametrize("backend", available_backends())
def test_train_matches_official_oracle_with_replayed_noise(oracle, backend):
    t = oracle("dyvm_small_train")
    model = oracle_model(t, backend).train()
    out = model(t["input"], noise=replay_noise(t))
    assert (out.logits - t["logits"]).abs().max() < 1e-5
    assert (out.tokens - t["other_t"]).abs().max() < 1e-5
    assert torch.equal(out.token_policy, t["token_policy"])
    assert torch.equal(out.current_pos, t["current_pos"])
    assert torch.equal(out.gates, t["block_policy"].squeeze(2))
    assert torch.equal(out.cls_pos, t["stage_cls_token_position"][-1])
    for k in range(3):
        assert torch.equal(out.decisions[k], t["pred_decisions"][k])
    loss = out.logits.square().mean() + sum(d.mean() for d in out.decisions) + out.gates.mean()
    assert abs(loss.item() - t["grad_loss"].item()) < 1e-5
    loss.backward()
    for name, p in model.named_parameters():
        ref = t["grads"][name]
        assert torch.allclose(p.grad, ref, rtol=1e-4, atol=1e-5), name


def small_dyvm(depth=4, embed_dim=32, img=32, patch=8, **kw):
    return dyvm.create_model("dyvm_vim_tiny", img_size=img, patch_size=patch, depth=depth,
                             embed_dim=embed_dim, num_classes=5, **kw)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_training_path_equals_inference_path(data):
    """Property: with the same keep sets and gates, the masked rearranged training forward gives
    the same logits and kept-token features as the physically pruned inference forward."""
    depth = data.draw(st.integers(2, 5), label="depth")
    patch = data.draw(st.sampled_from([4, 8]), label="patch")
    n_stages = data.draw(st.integers(1, depth - 1), label="stages")
    locs = sorted(data.draw(st.sets(st.integers(1, depth - 1), min_size=n_stages, max_size=n_stages)))
    batch = data.draw(st.integers(1, 3), label="batch")
    seed = data.draw(st.integers(0, 2 ** 16), label="seed")
    torch.manual_seed(seed)
    model = small_dyvm(depth=depth, patch=patch, img=16 if patch == 4 else 32, pruning_loc=locs)
    with torch.no_grad():  # make every part matter: real routers, larger state paths
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    m = model.num_patches
    x = torch.randn(batch, 3, model.img_size, model.img_size)
    keep, prev = [], torch.ones(batch, m, dtype=torch.bool)
    for _ in locs:
        prob = data.draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]), label="keep prob")
        prev = prev & (torch.rand(batch, m) < prob)
        keep.append(prev)
    gates = (torch.rand(depth, batch, 2) < data.draw(st.sampled_from([0.0, 0.5, 1.0]))).float()

    train = model.train().forward_train(x, keep_masks=keep, gates=gates.clone().requires_grad_(True))
    model.eval()
    for b in range(batch):
        idx = [k[b].nonzero().squeeze(1)[None] for k in keep]
        with torch.no_grad():
            inf = model.forward_inference(x[b:b + 1], keep_indices=idx, gates=gates[:, b:b + 1])
        n_keep = int(keep[-1][b].sum())
        assert (train.logits[b] - inf.logits[0]).abs().max() < 1e-5
        assert torch.equal(train.current_pos[b, :n_keep], inf.current_pos[0])
        assert torch.allclose(train.tokens[b, :n_keep], inf.tokens[0], rtol=0, atol=1e-5)
        assert int(train.cls_pos[b]) == n_keep // 2


def test_nothing_pruned_all_gates_on_is_plain_vim(oracle):
    o = oracle("vim_small")
    vim = dyvm.create_model("vim_small", **o["config"]).eval()
    vim.load_state_dict(o["state_dict"])
    cfg = dict(o["config"], pruning_loc=[1, 2, 3], token_ratio=[1.0, 1.0, 1.0])
    model = dyvm.create_model("dyvm_vim_small", **cfg).eval()
    report = dyvm.load_checkpoint(model, {"model": o["state_dict"]})
    assert len(report.new_initialised) == 3 * 10 + 4 * 2 and not report.missing
    with torch.no_grad():
        ref = vim(o["input"])
        out = model.forward_inference(o["input"])
    assert out.gates.min() == 1  # routers start at bias 5: every branch on
    assert torch.equal(out.logits, ref)
    train = model.train().forward_train(o["input"], keep_masks=[torch.ones(3, 16, dtype=torch.bool)] * 3,
                                        gates=torch.ones(4, 3, 2))
    assert (train.logits - ref).abs().max() < 1e-5


def test_branch_skipping_equals_masking():
    torch.manual_seed(0)
    mixer = small_dyvm(depth=2, pruning_loc=[1]).layers[0].mixer
    xz = torch.randn(5, 17, 2 * mixer.d_inner)
    for gates in (torch.tensor([[1., 0], [0, 1], [1, 1], [0, 0], [1, 0]]), torch.zeros(5, 2), torch.ones(5, 2),
                  torch.tensor([[1., 1], [1, 0], [1, 1], [1, 0], [1, 1]])):  # all forward, some backward
        with torch.no_grad():
            skipped = mixer.mix(xz, None, gates)
            multiplied = mixer.mix(xz, None, gates.clone().requires_grad_(True))
        assert (skipped - multiplied).abs().max() < 1e-5


def test_sub_batch_really_skips_compute(monkeypatch):
    mixer = small_dyvm(depth=2, pruning_loc=[1]).layers[0].mixer
    xz, gates = torch.randn(4, 9, 2 * mixer.d_inner), torch.tensor([[1., 0], [0, 0], [1, 0], [0, 0]])
    # the fused inference mixer (one extension call): its matmuls show the rows each direction ran on (x_proj and
    # dt_proj as ATen matmuls here: their panel route, the default, is a plain loop the profiler does not see)
    monkeypatch.setattr(mixer, "all_panels", lambda: [])
    with torch.no_grad(), torch.profiler.profile(record_shapes=True) as prof:
        mixer.mix(xz, None, gates)
    monkeypatch.undo()
    rows = sorted(e.input_shapes[0][0] for e in prof.events() if e.name == "aten::mm")
    assert rows == [2 * 9, 2 * 9, 4 * 9]  # x_proj and dt_proj on 2 images (one direction), out_proj on all 4
    # the Python mixer (what runs where the fused one does not apply)
    seen = []
    original = mixer._branch
    monkeypatch.setattr(mixer, "fused_call", lambda *a, **k: None)
    monkeypatch.setattr(mixer, "_branch", lambda backward, x, *a: seen.append((backward, x.shape[0])) or
                        original(backward, x, *a))
    with torch.no_grad():
        mixer.mix(xz, None, gates)
    assert seen == [(False, 2)]  # forward branch for 2 images, backward branch not at all


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("arch,kw", [("dyvm_vim_tiny", {}), ("dyvm_mambareg_small", {})])
def test_fused_router_and_mixer_equal_the_python_ones(monkeypatch, arch, kw, autocast):
    """Eager CPU inference routes and mixes in one extension call per layer (where the stacked call of every
    layer does not run): the router reads the class token (or the registers' mean), and the logits, gates, kept
    tokens and logits equal the Python path's exactly, in float32 and under bf16 autocast."""
    from dyvm.models import vim as vim_mod

    monkeypatch.setattr(vim_mod.VisionMamba, "fused_stack", lambda *a, **k: None)
    torch.manual_seed(0)
    model = dyvm.create_model(arch, img_size=32, patch_size=4, depth=4, embed_dim=32, num_classes=5,
                              pruning_loc=[1, 2, 3], **kw).eval()
    for layer in model.layers:  # routers with real decisions: some branches off
        torch.nn.init.normal_(layer.mixer.block_head.weight, std=0.5)
        torch.nn.init.zeros_(layer.mixer.block_head.bias)
    images = torch.randn(6, 3, 32, 32)
    calls = []
    real = vim_mod.Block.fused_forward
    monkeypatch.setattr(vim_mod.Block, "fused_forward", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        fused = model.forward_inference(images)
        assert len(calls) == 4
        monkeypatch.setattr(vim_mod.BiMambaMixer, "fused_call", lambda *a, **k: None)
        python = model.forward_inference(images)
    assert 0 < fused.gates.mean() < 1
    if arch == "dyvm_vim_tiny":  # images on different branches in some layer (the registers barely differ)
        assert any(len(set(map(tuple, g.tolist()))) > 1 for g in fused.gates)
    assert torch.equal(fused.gates, python.gates) and torch.equal(fused.router_logits, python.router_logits)
    assert all(torch.equal(a, b) for a, b in zip(fused.keep_indices, python.keep_indices))
    assert torch.equal(fused.logits, python.logits)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("arch,kw", [("dyvm_vim_tiny", {}), ("dyvm_vim_tiny", dict(slot_prior=True, token_sampler="topk")),
                                     ("dyvm_mambareg_small", {}), ("dyvm_videomamba_tiny", {})])
def test_fused_pruning_stage_equals_the_python_one(monkeypatch, arch, kw, autocast):
    """Eager CPU inference runs each pruning stage (predictor, top-k, the rebuilt sequence with the prefix tokens
    re-placed) in one extension call (where the stacked call of every layer does not run): scores, kept tokens,
    gates and logits equal the Python path's exactly, also on images made of identical patches (ties in the top-k)
    and under bf16 autocast."""
    from dyvm.models import dyvm as dyvm_mod
    from dyvm.models import vim as vim_mod

    monkeypatch.setattr(vim_mod.VisionMamba, "fused_stack", lambda *a, **k: None)
    torch.manual_seed(0)
    model = dyvm.create_model(arch, img_size=32, patch_size=4, depth=4, embed_dim=32, num_classes=5,
                              pruning_loc=[1, 2, 3], **kw).eval()
    for predictor in model.score_predictors:  # scores that differ between tokens
        torch.nn.init.normal_(predictor.out_conv[4].weight, std=0.5)
        if predictor.slot_bias is not None:
            torch.nn.init.normal_(predictor.slot_bias)
    images = torch.cat([torch.randn(4, 3, 32, 32), torch.zeros(2, 3, 32, 32)])
    real, fused_calls = dyvm_mod.DyVM._fused_stage, []
    monkeypatch.setattr(dyvm_mod.DyVM, "_fused_stage", lambda *a: fused_calls.append(real(*a)) or fused_calls[-1])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        fused = model.forward_inference(images)
        assert len(fused_calls) == 3 and all(c is not None for c in fused_calls)
        monkeypatch.setattr(dyvm_mod.DyVM, "_fused_stage", lambda *a: None)
        python = model.forward_inference(images)
    for name in ("keep_indices", "keep_indices_local", "pred_scores", "prefix_positions"):
        assert all(torch.equal(a, b) for a, b in zip(getattr(fused, name), getattr(python, name))), name
    assert fused.cls_positions == python.cls_positions
    assert torch.equal(fused.gates, python.gates) and torch.equal(fused.logits, python.logits)
    assert torch.equal(fused.tokens, python.tokens) and torch.equal(fused.current_pos, python.current_pos)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("arch,kw", [("dyvm_vim_tiny", {}), ("dyvm_vim_tiny", dict(slot_prior=True, token_sampler="topk")),
                                     ("dyvm_vim_tiny", dict(use_routers=False)), ("dyvm_vim_tiny", dict(use_pruning=False)),
                                     ("dyvm_mambareg_small", {}), ("dyvm_videomamba_tiny", {})])
def test_stacked_inference_equals_the_per_layer_and_python_paths(monkeypatch, arch, kw, autocast):
    """Eager CPU inference runs every block, router and pruning stage in one extension call: every output (scores,
    kept tokens, prefix positions, router logits, gates, tokens, logits) equals the per-layer calls' and the Python
    path's exactly, also on images of identical patches (top-k ties) and under bf16 autocast."""
    from dyvm.models import dyvm as dyvm_mod
    from dyvm.models import vim as vim_mod

    torch.manual_seed(0)
    model = dyvm.create_model(arch, img_size=32, patch_size=4, depth=4, embed_dim=32, num_classes=5,
                              **({} if kw.get("use_pruning") is False else dict(pruning_loc=[1, 2, 3])), **kw).eval()
    for predictor in model.score_predictors:  # scores that differ between tokens
        torch.nn.init.normal_(predictor.out_conv[4].weight, std=0.5)
        if predictor.slot_bias is not None:
            torch.nn.init.normal_(predictor.slot_bias)
    if model.use_routers:
        for layer in model.layers:  # routers with real decisions: some branches off
            torch.nn.init.normal_(layer.mixer.block_head.weight, std=0.5)
            torch.nn.init.zeros_(layer.mixer.block_head.bias)
    images = torch.cat([torch.randn(4, 3, 32, 32), torch.zeros(2, 3, 32, 32)])
    stack, stacked = vim_mod.VisionMamba.fused_stack, []
    outputs = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        monkeypatch.setattr(vim_mod.VisionMamba, "fused_stack", lambda *a, **k: stacked.append(stack(*a, **k)) or stacked[-1])
        outputs["stacked"] = model.forward_inference(images)
        assert len(stacked) == 1 and stacked[0] is not None
        monkeypatch.setattr(vim_mod.VisionMamba, "fused_stack", lambda *a, **k: None)
        outputs["layers"] = model.forward_inference(images)
        monkeypatch.setattr(vim_mod.BiMambaMixer, "fused_call", lambda *a, **k: None)
        monkeypatch.setattr(dyvm_mod.DyVM, "_fused_stage", lambda *a: None)
        outputs["python"] = model.forward_inference(images)
    fused = outputs["stacked"]
    if model.use_routers:
        assert 0 < fused.gates.mean() < 1
    for other in ("layers", "python"):
        ref = outputs[other]
        for name in ("keep_indices", "keep_indices_local", "pred_scores", "prefix_positions"):
            assert len(getattr(fused, name)) == len(getattr(ref, name))
            assert all(torch.equal(a, b) for a, b in zip(getattr(fused, name), getattr(ref, name))), (other, name)
        assert fused.cls_positions == ref.cls_positions
        for name in ("logits", "gates", "router_logits", "tokens", "current_pos"):
            assert torch.equal(getattr(fused, name), getattr(ref, name)), (other, name)
        assert torch.equal(fused.features.hidden, ref.features.hidden)
        assert torch.equal(fused.features.prefix_pos, ref.features.prefix_pos)


@pytest.mark.parametrize("arch,kw", [("dyvm_vim_tiny", {}), ("dyvm_vim_tiny", dict(slot_prior=True, token_sampler="topk")),
                                     ("dyvm_vim_tiny", dict(use_routers=False)), ("dyvm_vim_tiny", dict(use_pruning=False)),
                                     ("dyvm_mambareg_small", {}), ("dyvm_videomamba_tiny", {})])
@pytest.mark.parametrize("autocast", [False, True])
def test_whole_forward_in_one_call_equals_the_split_path(monkeypatch, arch, kw, autocast):
    """A DyVM's eval forward at eager CPU inference is one extension call (embedding, every block, router and stage,
    final norm, head) where its variant embeds and classifies as Vim does (VideoMamba's image model too, with its class
    token first): exactly the logits of forward_inference, also on images of identical patches (top-k ties). MambaReg
    (its registers' own embedding and head) keeps the split path. In float32 and under bf16 autocast."""
    from dyvm.kernels import mix_cpp
    from dyvm.models import vim as vim_mod

    torch.manual_seed(0)
    model = dyvm.create_model(arch, img_size=32, patch_size=4, depth=4, embed_dim=32, num_classes=5,
                              **({} if kw.get("use_pruning") is False else dict(pruning_loc=[1, 2, 3])), **kw).eval()
    for predictor in model.score_predictors:
        torch.nn.init.normal_(predictor.out_conv[4].weight, std=0.5)
    if model.use_routers:  # routers with real decisions: some branches off
        for layer in model.layers:
            torch.nn.init.normal_(layer.mixer.block_head.weight, std=0.5)
            torch.nn.init.zeros_(layer.mixer.block_head.bias)
    images = torch.cat([torch.randn(4, 3, 32, 32), torch.zeros(2, 3, 32, 32)])
    calls, op = [], mix_cpp.forward_logits
    monkeypatch.setattr(mix_cpp, "forward_logits", lambda *a, **k: calls.append(1) or op(*a, **k))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        fused = model(images)
        split = model.forward_inference(images, features=False)
        monkeypatch.setattr(vim_mod.VisionMamba, "fused_logits", lambda *a: None)
        assert torch.equal(model(images), fused)
    assert calls == ([] if arch == "dyvm_mambareg_small" else [1])
    assert torch.equal(fused, split.logits)
    if model.use_routers and arch == "dyvm_vim_tiny":
        assert 0 < split.gates.mean() < 1


def test_fused_inference_returns_ordinary_tensors_under_no_grad(monkeypatch):
    """The fused inference ops run their ATen calls below autograd (as inference_mode would), but what a no_grad
    forward returns are ordinary tensors: not inference tensors, changeable in place afterwards and usable as
    constants in a later autograd graph; a block called on its own (one block_forward call) likewise."""
    from dyvm.kernels import mix_cpp

    torch.manual_seed(0)
    model = dyvm.create_model("dyvm_vim_tiny", img_size=32, patch_size=4, depth=4, embed_dim=32, num_classes=5,
                              pruning_loc=[1, 2, 3]).eval()
    images = torch.randn(2, 3, 32, 32)
    calls = []
    for name in ("stack_forward", "block_forward"):
        op = getattr(mix_cpp, name)
        monkeypatch.setattr(mix_cpp, name, lambda *a, _op=op, _name=name, **k: calls.append(_name) or _op(*a, **k))
    with torch.no_grad():
        out = model.forward_inference(images)
        block = model.layers[0](model.embed(images), None)
    assert calls == ["stack_forward", "block_forward"], calls
    for t in (out.logits, out.features.hidden, *out.keep_indices, *out.pred_scores, out.gates, *block):
        assert not t.is_inference()
    logits = out.logits.clone()
    out.logits.mul_(2)  # in place, outside any inference context
    assert torch.equal(out.logits, logits * 2)
    w = torch.ones(5, requires_grad=True)
    (out.logits * w).sum().backward()
    assert torch.equal(w.grad, out.logits.sum(0))


@pytest.mark.parametrize("arch", ["vim_tiny", "mambareg_small", "videomamba_tiny"])
def test_stacked_backbone_equals_the_per_layer_path(monkeypatch, arch):
    """A plain Vim-family backbone at eager CPU inference runs its blocks in one extension call: the same final
    features and logits as one call per block, in float32 and under bf16 autocast."""
    from dyvm.models import vim as vim_mod

    torch.manual_seed(0)
    model = dyvm.create_model(arch, img_size=32, patch_size=4, depth=3, embed_dim=32, num_classes=5).eval()
    images = torch.randn(3, 3, 32, 32)
    stack, stacked = vim_mod.VisionMamba.fused_stack, []
    for autocast in (False, True):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            monkeypatch.setattr(vim_mod.VisionMamba, "fused_stack",
                                lambda *a, **k: stacked.append(stack(*a, **k)) or stacked[-1])
            fused = model.forward_detailed(images)
            monkeypatch.setattr(vim_mod.VisionMamba, "fused_stack", lambda *a, **k: None)
            layers = model.forward_detailed(images)
        assert stacked and stacked[-1] is not None
        assert torch.equal(fused.logits, layers.logits) and torch.equal(fused.tokens, layers.tokens)


def test_pure_pytorch_inference_under_bf16_autocast_with_sub_batched_branches(monkeypatch):
    """Without the C++ kernels (pure-PyTorch conv and scan) a branch on for some images of a batch runs on that
    sub-batch in 16 bits under CPU autocast; its rows are added into a buffer of that dtype (a float32 one made
    index_add_ raise), and equal the gated sum of both branches over the whole batch (the training form)."""
    monkeypatch.setenv("DYVM_CONV_BACKEND", "torch")
    torch.manual_seed(0)
    model = small_dyvm(depth=2, pruning_loc=[1]).eval().set_scan_backend("torch")
    mixer = model.layers[0].mixer
    xz = torch.randn(4, 17, 2 * mixer.d_inner)
    gates = torch.tensor([[1., 0], [0, 1], [1, 1], [0, 0]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        skipped = mixer.mix(xz, None, gates)
        gated = mixer.mix(xz, None, gates.clone().requires_grad_(True))
    assert skipped.dtype == gated.dtype == torch.bfloat16
    assert torch.allclose(skipped.float(), gated.float(), rtol=0.02, atol=0.02)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # and the whole model runs
        assert torch.isfinite(model(torch.randn(3, 3, 32, 32)).float()).all()


@pytest.mark.parametrize("arch,kw", [("vim_tiny", {}), ("dyvm_vim_tiny", {}), ("dyvm_vim_tiny", dict(score="random")),
                                     ("dyvm_vim_tiny", dict(token_sampler="stratified")), ("dyvm_mambareg_small", {}),
                                     ("dyvm_videomamba_tiny", {})])
def test_an_empty_batch_gives_empty_logits(monkeypatch, arch, kw):
    """Inference on zero images returns (0, classes) logits on every path (stacked, per layer, Python), as the
    pruning stages' and gathers' index arithmetic used to raise there."""
    from dyvm.models import vim as vim_mod

    model = dyvm.create_model(arch, img_size=32, patch_size=8, depth=3, embed_dim=32, num_classes=5,
                              **({} if arch.startswith("vim") else dict(pruning_loc=[1, 2])), **kw).eval()
    empty = torch.randn(0, 3, 32, 32)
    with torch.no_grad():
        assert model(empty).shape == (0, 5)
        monkeypatch.setattr(vim_mod.VisionMamba, "fused_stack", lambda *a, **k: None)
        assert model(empty).shape == (0, 5)
        monkeypatch.setattr(vim_mod.BiMambaMixer, "fused_call", lambda *a, **k: None)
        assert model(empty).shape == (0, 5)


def test_stacked_op_refuses_bad_arguments():
    from dyvm.kernels import mix_cpp

    model = small_dyvm(depth=2, pruning_loc=[1]).eval()
    seq = model.embed_sequence(torch.randn(2, 3, 32, 32))
    captured = {}
    real = mix_cpp.stack_forward
    with torch.no_grad():
        mix_cpp.stack_forward = lambda *a: captured.setdefault("args", a) and real(*a)
        try:
            model.forward_inference(torch.randn(2, 3, 32, 32))
        finally:
            mix_cpp.stack_forward = real
        hidden, residual, ids, layers, eps, scale, routed, threshold, positions, stages, packed, panels = captured["args"]
        # per layer x_proj and dt_proj of both branches, then in_proj's and out_proj's (small weights here)
        assert len(panels) == 6 * 2 and panels[4].shape[0] == layers[1].shape[1]
        good = dict(layers=layers, eps=eps, positions=positions, stages=stages, packed=packed, panels=panels)
        out = real(hidden, residual, ids, layers, eps, scale, routed, threshold, positions, stages, packed, panels)
        assert len(out) == 3 + 3 + 2 and out[-1].shape == (2, 2, 2)
        stage = stages[0]
        for change, word in ((dict(layers=layers[:-1]), "layers"), (dict(eps=eps[:1]), "layers"),
                             (dict(positions=positions + [[0]]), "positions"),
                             (dict(stages=[(0,) + stage[1:]]), "stage_layers"),
                             (dict(stages=[stage[:2] + (stage[2][:-1],) + stage[3:]]), "predictor"),
                             (dict(stages=[stage[:1] + (10 ** 6,) + stage[2:]]), "keep"),
                             (dict(packed=[layers[1]]), "packed"), (dict(panels=panels[:5]), "panels"),
                             (dict(panels=[panels[1]] + panels[1:]), "panel")):
            args = {**good, **change}
            with pytest.raises(RuntimeError, match=word):
                real(hidden, residual, ids, args["layers"], args["eps"], scale, routed, threshold, args["positions"],
                     args["stages"], args["packed"], args["panels"])


def test_fused_pruning_stage_refuses_bad_arguments():
    from dyvm.kernels import mix_cpp

    model = small_dyvm(depth=2, pruning_loc=[1]).eval()
    params = model.score_predictors[0].fused_params()
    d = params[0].shape[0]
    h, ids = torch.randn(2, 9, d), torch.arange(8).expand(2, 8)
    with torch.no_grad():
        out = mix_cpp.prune_stage(h, h, ids, params, 1e-5, 3, [4], [1])
        assert [tuple(t.shape) for t in out] == [(2, 4, d), (2, 4, d), (2, 3), (2, 3), (2, 8, 2)]
        for args, word in (((h, h, ids, params, 1e-5, 9, [4], [1]), "keep"),
                           ((h, h, ids, params, 1e-5, 3, [9], [1]), "prefix"),
                           ((h, h, ids, params, 1e-5, 3, [4], [4]), "new_prefix"),
                           ((h, h, ids[:, :7], params, 1e-5, 3, [4], [1]), "patch_ids"),
                           ((h, h, ids, params[:9], 1e-5, 3, [4], [1]), "predictor")):
            with pytest.raises(RuntimeError, match=word):
                mix_cpp.prune_stage(*args)


@pytest.mark.parametrize("dim,tokens,batch,slots", [(32, 16, 3, None), (48, 5, 2, 3), (64, 1, 1, None), (128, 70, 2, None),
                                                     (64, 9, 0, None)])
def test_token_predictor_at_inference_matches_its_modules(dim, tokens, batch, slots):
    """At eager CPU inference the token predictor is one extension call (plain loops; BLAS for a large first Linear,
    as at dim 128): its log-probabilities match the modules' (the training path) in float64 to float32 rounding,
    with and without a slot prior, on one token and on an empty batch."""
    from dyvm.dynamic import TokenPredictor
    from dyvm.kernels import mix_cpp

    torch.manual_seed(0)
    pred = TokenPredictor(dim, num_slots=slots).eval()
    for m in pred.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=dim ** -0.5)
            torch.nn.init.normal_(m.bias, std=0.1)
    if slots:
        torch.nn.init.normal_(pred.slot_bias)
    x = torch.randn(batch, tokens, dim) * 2
    reference = TokenPredictor(dim, num_slots=slots).double()
    reference.load_state_dict(pred.state_dict())
    with torch.no_grad():
        assert mix_cpp.predictor_applies(x, pred.fused_params())
        fast = pred(x)
        want = reference(x.double())
    assert fast.dtype == torch.float32 and fast.shape == (batch, tokens, 2)
    torch.testing.assert_close(fast.double(), want, rtol=0, atol=2e-6)
    with torch.enable_grad():  # autograd needed: the modules run
        assert not mix_cpp.predictor_applies(x, pred.fused_params())
        assert pred(x).requires_grad


def test_token_predictor_and_router_ops_refuse_bad_arguments_and_step_aside_for_hooks():
    from dyvm.dynamic import TokenPredictor
    from dyvm.kernels import mix_cpp

    pred = TokenPredictor(32).eval()
    params, x = pred.fused_params(), torch.randn(2, 5, 32)
    with torch.no_grad():
        for args, word in (((x[..., :16], params, 1e-5), "predictor_forward: predictor tensor 0"), ((x, params[:9], 1e-5), "predictor"),
                           ((x.double(), params, 1e-5), "float32")):
            with pytest.raises(RuntimeError, match=word):
                mix_cpp.predictor_forward(*args)
        head = torch.nn.Linear(64, 2)
        with pytest.raises(RuntimeError, match="weight"):
            mix_cpp.router_forward(torch.randn(3, 64), head.weight[:, :32].contiguous(), head.bias, 0.5)
        seen = []
        handle = pred.in_conv[2].register_forward_hook(lambda *a: seen.append(1))
        try:
            pred(x)  # a hook on one of its modules: the modules run, and the hook sees its call
        finally:
            handle.remove()
        assert seen == [1]


def test_router_at_inference_matches_its_linear():
    """At eager CPU inference a router's head is one extension call: its logits match block_head's to float32
    rounding and its gates are sigmoid(logits) > threshold, also for a 16-bit input (autocast)."""
    from dyvm.kernels import mix_cpp

    torch.manual_seed(0)
    head = torch.nn.Linear(96, 2)
    torch.nn.init.normal_(head.weight, std=0.3)
    x = torch.randn(7, 96)
    with torch.no_grad():
        assert mix_cpp.router_applies(x, head.weight, head.bias)
        for inp in (x, x.bfloat16()):
            logits, gates = mix_cpp.router_forward(inp, head.weight, head.bias, 0.5)
            want = torch.nn.functional.linear(inp.double(), head.weight.double(), head.bias.double())
            torch.testing.assert_close(logits.double(), want, rtol=0, atol=1e-5)
            assert torch.equal(gates, (torch.sigmoid(logits) > 0.5).float()) and 0 < gates.mean() < 1


def test_token_gather_equals_torch_gather_values_and_gradients():
    from dyvm.models.tokens import gather_tokens

    torch.manual_seed(0)
    for shape, k in (((3, 11, 5), 6), ((3, 11), 6), ((2, 7, 2, 3), 6), ((3, 11, 5), 0)):  # k 0: no prefix tokens
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        index = torch.stack([torch.randperm(shape[1])[:k] for _ in range(shape[0])])
        got = gather_tokens(x, index)
        expanded = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *shape[2:])
        want = x.gather(1, expanded)
        assert torch.equal(got, want)
        g = torch.randn_like(want)
        assert torch.equal(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0])


@pytest.mark.parametrize("arch", ["dyvm_vim_tiny", "dyvm_mambareg_small"])
def test_router_reads_the_prefix_tokens_by_index_as_by_gather(arch):
    """Inference reads the routers' input at prefix positions shared by the batch (plain indexing);
    it must equal the per-image gather (one class token, or the mean of MambaReg's registers)."""
    torch.manual_seed(0)
    model = dyvm.create_model(arch, img_size=32, patch_size=4, depth=4, embed_dim=32, num_classes=5).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        seq = model.embed_sequence(x)
        xz = torch.randn(3, seq.hidden.shape[1], 8)
        by_gather = model.router_input(xz, seq)
        by_index = model.router_input(xz, seq, seq.prefix_pos[0].tolist())
    assert (seq.prefix_pos.shape[1] == 1) == (arch == "dyvm_vim_tiny")  # MambaReg: several registers
    assert torch.equal(by_gather, by_index)


def test_keeping_every_token_gives_the_same_logits_for_every_score_source():
    """ρ = 1 (what the demo's sweep evaluates once for all three curves): nothing depends on the scores."""
    torch.manual_seed(0)
    model = small_dyvm(pruning_loc=[1, 2, 3], token_keep_ratio=0.5).eval()
    x = torch.randn(4, 3, 32, 32)
    outs = []
    for score in ("predictor", "random", "static"):
        model.configure(token_keep_ratio=1.0, score=score)
        with torch.no_grad():
            outs.append(model.forward_inference(x))
    assert all(torch.equal(o.logits, outs[0].logits) and torch.equal(o.gates, outs[0].gates) for o in outs)
    assert model.keep_counts() == [model.num_patches] * 3


def test_pruned_token_grad_changes_no_value_and_reaches_the_pruned_slots():
    """The probe adds exactly 0 (logits bit-identical, train ≡ inference kept) but gives the predictor a
    gradient at the slots it pruned, which the dropped tail otherwise cuts off."""
    torch.manual_seed(0)
    kw = dict(pruning_loc=[1, 2, 3], token_keep_ratio=0.5, token_sampler="topk")
    plain = small_dyvm(**kw).train()
    probed = small_dyvm(pruned_token_grad=True, **kw).train()
    probed.load_state_dict(plain.state_dict())
    x = torch.randn(3, 3, 32, 32)
    grads = {}
    for name, model in (("plain", plain), ("probed", probed)):
        seen = []
        handle = model.score_predictors[0].register_forward_hook(lambda m, i, out: seen.append(out) or out.retain_grad())
        out = model(x, noise=torch.Generator().manual_seed(1))
        handle.remove()
        out.logits.sum().backward()
        pruned = out.decisions[0].detach() < 0.5
        grads[name] = (out.logits.detach(), seen[0].grad[..., 0][pruned])
    assert torch.equal(grads["plain"][0], grads["probed"][0])
    assert grads["plain"][1].abs().max() == 0 and grads["probed"][1].abs().max() > 0
    assert probed.config.pruned_token_grad is True
    with pytest.raises(ValueError, match="needs a class token"):
        dyvm.create_model("dyvm_vim_seg_micro", pruned_token_grad=True)


def test_stratified_selection_keeps_one_token_per_stratum_and_trains_on_what_inference_computes():
    from dyvm.dynamic import strata, stratified_keep

    assert strata(7, 3).tolist() == [[0, 1, -1], [2, 3, -1], [4, 5, 6]]
    grid = strata(49, 14)
    assert sorted(int(i) for i in grid.flatten() if i >= 0) == list(range(49))  # a partition, in order
    scores = torch.tensor([[0., 5, 1, 9, 2, 0, 3], [7., 0, 0, 0, 0, 8, 0]])
    assert stratified_keep(scores, 3).tolist() == [[1, 3, 6], [0, 2, 5]]
    assert stratified_keep(scores, 7).tolist() == [list(range(7))] * 2 and stratified_keep(scores, 1).tolist() == [[3], [5]]
    torch.manual_seed(0)
    model = small_dyvm(pruning_loc=[1, 2, 3], token_keep_ratio=0.7, token_sampler="stratified", token_noise=0.0)
    x, gates = torch.randn(3, 3, 32, 32), torch.ones(4, 3, 2)
    train = model.train().forward_train(x, gates=gates)
    with torch.no_grad():
        inference = model.eval().forward_inference(x, gates=gates)
    assert [d.sum(1).tolist() for d in train.decisions] == [[n] * 3 for n in model.keep_counts()]
    assert torch.equal(train.current_pos, inference.current_pos)
    assert (train.logits - inference.logits).abs().max() < 1e-5
    noisy = small_dyvm(pruning_loc=[1, 2, 3], token_keep_ratio=0.7, token_sampler="stratified").train()
    out = noisy(x, noise=torch.Generator().manual_seed(0))
    out.logits.sum().backward()  # the straight-through gradient reaches the predictor
    assert noisy.score_predictors[0].out_conv[4].weight.grad.abs().max() > 0


def test_knobs_and_keep_counts():
    model = small_dyvm(pruning_loc=[1, 2, 3], token_keep_ratio=0.7)
    assert model.keep_counts() == [int(0.7 * 16), int(0.7 ** 2 * 16), int(0.7 ** 3 * 16)]
    assert dyvm.create_model("dyvm_vim_small").keep_counts() == [137, 96, 67]
    assert dyvm.create_model("dyvm_vim_tiny").keep_counts() == [176, 158, 142]
    model.eval().configure(token_keep_ratio=0.9, router_threshold=0.9)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.forward_inference(x)
    assert [k.shape[1] for k in out.keep_indices] == [14, 12, 11]
    for score in ("random", "static"):
        model.configure(score=score)
        with torch.no_grad():
            out = model.forward_inference(x)
        assert [k.shape[1] for k in out.keep_indices] == [14, 12, 11]
        tr = model.train().forward_train(x)
        if score == "static":  # the official training masks: the same count per image...
            assert [d.sum(1).tolist() for d in tr.decisions] == [[14, 14], [12, 12], [11, 11]]
        else:  # ... or int(B·M·ρ_k) over the whole batch
            assert [int(d.sum()) for d in tr.decisions] == [int(2 * 16 * r) for r in model.token_ratio]
        model.eval()
    static = model.configure(score="static").forward_inference(x).keep_indices[0][0]
    assert static.tolist() == torch.linspace(0, 15, 14).long().tolist()


@pytest.mark.parametrize("kwargs,match", [
    (dict(token_keep_ratio=0.0), "token_keep_ratio"), (dict(token_keep_ratio=1.5), "token_keep_ratio"),
    (dict(pruning_loc=[0, 1, 2]), "pruning_loc"), (dict(pruning_loc=[1, 9, 2]), "pruning_loc"),
    (dict(pruning_loc=[2, 1, 3]), "pruning_loc"), (dict(pruning_loc=[1, 1, 2]), "pruning_loc"),
    (dict(block_keep_ratio=0), "block_keep_ratio"),
    (dict(token_ratio=[0.5, 0.6, 0.4]), "cumulative"), (dict(token_ratio=[0.5]), "stages"),
    (dict(router_threshold=1.0), "router_threshold"), (dict(score="oracle"), "score"),
    (dict(token_keep_ratio=0.7, token_ratio=[0.7, 0.5, 0.3]), "not both"),
    (dict(token_sampler="bernoulli"), "token_sampler"), (dict(slot_prior=True), "slot_prior needs"),
    (dict(token_noise=-1.0), "token_noise")])
def test_bad_dyvm_arguments(kwargs, match):
    cfg = dict(pruning_loc=[1, 2, 3])
    cfg.update(kwargs)
    with pytest.raises(ValueError, match=match):
        small_dyvm(**cfg)


def test_checkpoints_into_dyvm(oracle):
    e = oracle("dyvm_small_eval")
    model = dyvm.create_model("dyvm_vim_small", **e["config"])
    assert dyvm.load_checkpoint(model, {"model": e["state_dict"]}, strict=True).missing == []
    partial = {k: v for k, v in e["state_dict"].items() if not k.startswith("score_predictors.1.")}
    with pytest.raises(ValueError, match="score_predictors.1"):
        dyvm.load_checkpoint(model, {"model": partial}, strict=True)
    with pytest.raises(ValueError, match="score_predictors.1"):
        dyvm.load_checkpoint(model, {"model": partial})


def test_keep_prior_initialisation():
    model = small_dyvm(pruning_loc=[1, 2, 3], token_keep_ratio=0.7)
    model.reset_dynamic_parameters(keep_prior=True)
    x = torch.randn(64, 16, model.embed_dim)
    for k, predictor in enumerate(model.score_predictors):
        keep = predictor(x, torch.ones(64, 16, 1))[..., 0].exp().mean().item()
        assert abs(keep - 0.7) < 0.02, k  # each stage keeps 0.7 of the live tokens at the start
    model.reset_dynamic_parameters()
    keep = model.score_predictors[0](x, torch.ones(64, 16, 1))[..., 0].exp().mean().item()
    assert abs(keep - 0.5) < 0.02  # the official initialisation
    assert torch.all(model.layers[0].mixer.block_head.bias == 5.0)


def test_topk_sampler_trains_on_what_inference_computes():
    """token_sampler='topk': every image keeps exactly inference's count at each stage; without noise
    the training keep sets are inference's top-k sets and the logits are the same; the predictors get
    gradients through the straight-through decisions."""
    torch.manual_seed(0)
    model = small_dyvm(pruning_loc=[1, 2, 3], token_keep_ratio=0.7, token_sampler="topk")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(3, 3, model.img_size, model.img_size)
    no_noise = lambda shape, device: torch.ones(shape)  # Exp(1) draws of 1 → Gumbel noise 0
    train = model.train().forward_train(x, noise=no_noise)
    for decision, count in zip(train.decisions, model.keep_counts()):
        assert decision.sum(1).tolist() == [float(count)] * 3
    train.logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.score_predictors.parameters()
               if p.dim() == 2)
    gates = train.gates.detach()
    model.eval()
    with torch.no_grad():
        inf = model.forward_inference(x, gates=gates)
    n = model.keep_counts()[-1]
    # the pruned tail is dropped: training's last stage holds inference's n tokens, nothing more
    assert train.current_pos.shape == inf.current_pos.shape == (3, n)
    assert train.tokens.shape == inf.tokens.shape
    assert torch.equal(train.current_pos, inf.current_pos)
    assert (train.logits - inf.logits).abs().max() < 1e-5
    noisy = model.train().forward_train(x)  # with Gumbel noise: still exactly the count
    assert [d.sum(1).tolist() for d in noisy.decisions] == [[float(c)] * 3 for c in model.keep_counts()]
    assert model.config["token_sampler"] == "topk"
    model.token_noise = 0.0  # no noise: training keeps inference's own top-k, whatever the noise source
    again = model.train().forward_train(x)  # (its router gates are drawn with noise: replay them)
    with torch.no_grad():
        inf = model.eval().forward_inference(x, gates=again.gates.detach())
    assert torch.equal(again.current_pos[:, :n], inf.current_pos)


def test_dropping_the_pruned_tail_leaves_the_keep_ratio_loss_unchanged():
    """The top-k sampler keeps inference's count, so training drops the pruned tail of the sequence; its decisions and
    keep shares (what the keep-ratio loss reads: p(keep) with keep_ratio_source="probabilities") still cover all M
    patch slots (the dropped ones as 0), so the keep-ratio loss and its gradient are those of the full layout, which keeps the tail. (Over the
    live tokens only, stage k's kept share of stage k−1's tokens was compared with the cumulative ρ_k: a loss of 0.088
    at the demo's point instead of ~2e-4, whose gradient pushed every live token's p(keep) down at the later
    stages.)"""
    from dyvm.losses import token_ratio_loss

    def ratio_loss_and_grads(model, x):
        model.zero_grad()
        out = model.train().forward_train(x, noise=lambda shape, device: torch.ones(shape))
        loss = token_ratio_loss(out.keep_shares, model.token_ratio)
        loss.backward()
        return out, loss, [p.grad.clone() for p in model.score_predictors.parameters()]

    torch.manual_seed(0)
    kw = dict(depth=5, pruning_loc=[2, 3, 4], token_keep_ratio=0.5, token_sampler="topk",
              keep_ratio_source="probabilities")
    model = small_dyvm(**kw)
    with torch.no_grad():  # p(keep) ≈ 0.88, off target (a fresh predictor's 0.5 meets ρ = 0.5 at every stage here)
        for predictor in model.score_predictors:
            predictor.out_conv[4].bias.copy_(torch.tensor([1.0, -1.0]))
    x = torch.randn(3, 3, model.img_size, model.img_size)
    dropped, loss, grads = ratio_loss_and_grads(model, x)
    m = model.num_patches
    assert [tuple(d.shape) for d in dropped.decisions] == [tuple(d.shape) for d in dropped.keep_shares] == [(3, m)] * 3
    assert dropped.tokens.shape[1] == model.keep_counts()[-1]             # the tail was dropped
    full_layout = small_dyvm(drop_pruned_tail=False, **kw)
    full_layout.load_state_dict(model.state_dict())
    full, full_loss, full_grads = ratio_loss_and_grads(full_layout, x)
    assert full.tokens.shape[1] == m                                      # the tail was kept
    assert all(torch.equal(a, b) for a, b in zip(dropped.decisions, full.decisions))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(dropped.keep_shares, full.keep_shares))
    assert loss.item() > 1e-3 and abs(loss.item() - full_loss.item()) < 1e-6
    # the last stage's predictor gets the full layout's gradient; the earlier ones' differ by the part that reaches
    # them through the later stages' p(keep), whose hidden states read the pruned tail only in the full layout (the
    # mask gradient that dropping the tail gives up: TokenSequence.rearrange)
    last = len(list(model.score_predictors[-1].parameters()))
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(grads[-last:], full_grads[-last:]))


def test_exact_count_samplers_can_hold_the_predicted_keep_ratio():
    """With a sampler that keeps exactly int(ρ_k·M) tokens the decisions' mean is ρ_k by construction, so their
    keep-ratio loss (the default) pushes nothing down; keep_ratio_source="probabilities" makes the loss read the
    predicted p(keep): a predictor that keeps every token with p ≈ 1 (where the decisions' loss had pushed the
    demo's) gets a loss and a gradient that lower p(keep), while the decisions still keep exactly inference's count.
    The paper's Gumbel-softmax sampler's loss reads its decisions either way."""
    from dyvm.losses import token_ratio_loss

    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    noise = lambda shape, device: torch.rand(shape).clamp_min(1e-6)  # noqa: E731
    with pytest.raises(ValueError, match="keep_ratio_source"):
        small_dyvm(keep_ratio_source="soft")
    for sampler, source in (("topk", "probabilities"), ("stratified", "probabilities"), ("topk", "decisions"),
                            ("gumbel", "probabilities")):
        model = small_dyvm(depth=4, pruning_loc=[1, 2, 3], token_keep_ratio=0.5, token_sampler=sampler,
                           keep_ratio_source=source).train()
        with torch.no_grad():
            for predictor in model.score_predictors:  # keep logit far above drop: p(keep) ≈ 1 everywhere
                predictor.out_conv[4].bias.copy_(torch.tensor([8.0, -8.0]))
        out = model.forward_train(x, noise=noise)
        if sampler == "gumbel" or source == "decisions":
            assert all(s is d for s, d in zip(out.keep_shares, out.decisions))
            continue
        assert [d.detach().sum(1).tolist() for d in out.decisions] == [[float(c)] * 4 for c in model.keep_counts()]
        first = out.keep_shares[0]
        assert not torch.equal(first, out.decisions[0]) and first.min() > 0.99  # p(keep) at every live slot
        loss = token_ratio_loss(out.keep_shares, model.token_ratio)
        assert loss.item() > 0.1
        loss.backward()
        bias = model.score_predictors[0].out_conv[4].bias.grad
        assert bias[0] > 0 > bias[1]  # gradient descent lowers the keep logit and raises the drop logit


def test_keeping_the_pruned_tail_gives_pruned_tokens_a_gradient_and_the_same_values():
    """drop_pruned_tail=False trains in the paper's layout: the pruned tokens stay at the end of the sequence, masked,
    and the backward SSM branch reads them before the kept ones, so the loss has a gradient at a pruned token's keep
    decision. Dropping the tail (the default for exact-count samplers) computes the same values without those
    gradients: the predictor's output gets exactly 0 at the tokens it pruned."""
    torch.manual_seed(0)
    kw = dict(depth=5, pruning_loc=[2, 3, 4], token_keep_ratio=0.5, token_sampler="topk")
    dropped = small_dyvm(**kw)
    kept = small_dyvm(drop_pruned_tail=False, **kw)
    kept.load_state_dict(dropped.state_dict())
    assert kept.config["drop_pruned_tail"] is False and dropped.config["drop_pruned_tail"] is True
    x, y = torch.randn(4, 3, dropped.img_size, dropped.img_size), torch.tensor([0, 1, 2, 3])

    def stage0(model):
        seen = {}
        handle = model.score_predictors[0].register_forward_hook(lambda mod, args, out: seen.update(logp=out))
        out = model.train().forward_train(x, noise=lambda shape, device: torch.ones(shape))
        handle.remove()
        seen["logp"].retain_grad()
        torch.nn.functional.cross_entropy(out.logits, y).backward()
        return out, seen["logp"].grad[..., 0], out.decisions[0] > 0.5

    out_d, grad_d, keep_d = stage0(dropped)
    out_k, grad_k, keep_k = stage0(kept)
    assert out_d.tokens.shape[1] == dropped.keep_counts()[-1] and out_k.tokens.shape[1] == dropped.num_patches
    assert all(torch.equal(a, b) for a, b in zip(out_d.decisions, out_k.decisions))
    assert torch.allclose(out_d.logits, out_k.logits, atol=1e-5)
    assert torch.equal(grad_d[~keep_d], torch.zeros_like(grad_d[~keep_d]))   # no signal from the pruned tokens
    assert grad_k[~keep_k].abs().max() > 1e-4 * grad_k[keep_k].abs().max()   # the paper's layout has one
    assert grad_d[keep_d].abs().max() > 0
    with pytest.raises(ValueError, match="drop_pruned_tail"):
        small_dyvm(token_sampler="stratified", drop_pruned_tail=False)


def test_slot_prior_starts_at_static_selection_and_learns():
    """slot_prior: a fresh DyVM keeps exactly what static pruning keeps; the prior is a parameter that
    trains, is reset with the other dynamic parts, and survives a checkpoint round trip."""
    torch.manual_seed(0)
    kw = dict(pruning_loc=[1, 2, 3], token_keep_ratio=0.7)
    model = small_dyvm(token_sampler="topk", slot_prior=True, **kw).eval()
    static = small_dyvm(score="static", **kw).eval()
    static.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(4, 3, model.img_size, model.img_size)
    with torch.no_grad():
        got, want = model.forward_inference(x), static.forward_inference(x)
    assert all(torch.equal(a, b) for a, b in zip(got.keep_indices, want.keep_indices))
    assert torch.allclose(got.logits, want.logits, atol=1e-6)
    biases = [p.slot_bias for p in model.score_predictors]
    assert [b.shape[0] for b in biases] == [model.num_patches] + model.keep_counts()[:-1]
    model.train().forward_train(x).logits.sum().backward()
    assert all(b.grad is not None and b.grad.abs().sum() > 0 for b in biases)
    with torch.no_grad():
        biases[0].zero_()
    model.reset_dynamic_parameters(keep_prior=True)
    assert sorted(set(biases[0].tolist())) == [-3.0, 3.0]
    rebuilt = dyvm.create_model("dyvm_vim_tiny", **dict(model.config))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.score_predictors[2].slot_bias.shape == biases[2].shape


@pytest.mark.parametrize("score", ["static", "random"])
def test_trained_baselines_train_on_inference_length(score):
    """With nested masks the trained random/static baselines keep exactly inference's count, so training drops
    the pruned tail too; static training ≡ static inference (same keep sets, same logits)."""
    torch.manual_seed(0)
    model = small_dyvm(pruning_loc=[1, 2, 3], token_keep_ratio=0.7, score=score, baseline_masks="nested")
    x = torch.randn(2, 3, model.img_size, model.img_size)
    train = model.train().forward_train(x)
    n = model.keep_counts()[-1]
    assert train.tokens.shape[1] == n and train.current_pos.shape == (2, n)
    train.logits.sum().backward()
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    if score == "static":
        with torch.no_grad():
            inf = model.eval().forward_inference(x, gates=train.gates.detach())
        assert torch.equal(train.current_pos, inf.current_pos)
        assert (train.logits - inf.logits).abs().max() < 1e-5


def test_official_baseline_masks_match_the_papers_ablation():
    """The official Pruning_Strategy masks: random keeps int(B·n·ρ_k) slots of the whole batch (per-image counts
    vary), static one evenly spaced mask for every image, both over all n rearranged slots, so tokens pruned
    at an earlier stage come back; the sequence keeps its full length and the policy is the last mask."""
    from dyvm.dynamic import official_baseline_keep

    gen = torch.Generator().manual_seed(0)
    rand = official_baseline_keep("random", 8, 49, 0.3, gen, "cpu")
    assert rand.shape == (8, 49) and rand.sum() == int(8 * 49 * 0.3) and set(rand.unique().tolist()) == {0.0, 1.0}
    assert len(set(rand.sum(1).tolist())) > 1                       # counts vary per image
    stat = official_baseline_keep("static", 3, 49, 0.09, None, "cpu")
    want = torch.zeros(49).index_fill_(0, torch.linspace(0, 48, 4).long(), 1.0)
    assert torch.equal(stat, want.expand(3, 49))
    with pytest.raises(ValueError, match="predictor"):
        official_baseline_keep("predictor", 1, 4, 0.5, None, "cpu")

    torch.manual_seed(0)
    for score in ("static", "random"):
        model = small_dyvm(pruning_loc=[1, 2, 3], token_keep_ratio=0.5, score=score).train()
        assert model.baseline_masks == "official" and model.config["baseline_masks"] == "official"
        x = torch.randn(4, 3, model.img_size, model.img_size)
        out = model.forward_train(x, noise=torch.Generator().manual_seed(1))
        m = model.num_patches
        assert out.tokens.shape[1] == m and out.current_pos.shape == (4, m)      # the tail is never dropped
        assert torch.equal(out.token_policy[..., 0].sum(1), out.decisions[-1].sum(1))
        # stage 2 keeps slots of stage 1's pruned tail (kept tokens come first): revived tokens
        tail = torch.arange(m)[None] >= out.decisions[0].sum(1, keepdim=True)
        assert (out.decisions[1] * tail).sum() > 0
        out.logits.sum().backward()
        assert model.patch_embed.proj.weight.grad.abs().sum() > 0
        assert model.eval()(x).shape == (4, model.num_classes)
    with pytest.raises(ValueError, match="baseline_masks"):
        small_dyvm(score="static", baseline_masks="batch")


def test_pruning_loc_counts_from_the_end_when_negative():
    """[-3, -2, -1] prunes before the last three layers at any depth (as many as exist after layer 0); the
    model and its saved config hold the resolved indices; a mix of signs or an index on layer 0 is refused."""
    kw = dict(img_size=28, patch_size=7, embed_dim=32)
    for depth, want in ((8, [5, 6, 7]), (24, [21, 22, 23]), (3, [1, 2]), (2, [1])):
        model = dyvm.create_model("dyvm_vim_tiny", depth=depth, pruning_loc=[-3, -2, -1], **kw)
        assert model.pruning_loc == want and model.config["pruning_loc"] == want
    with pytest.raises(ValueError, match="pruning_loc"):
        dyvm.create_model("dyvm_vim_tiny", depth=8, pruning_loc=[-3, 7], **kw)
    with pytest.raises(ValueError, match="pruning_loc"):
        dyvm.create_model("dyvm_vim_tiny", depth=8, pruning_loc=[-8], **kw)


def test_every_stage_keeps_at_least_one_patch_token():
    """Where the official int(ρ_k·M) would keep none (ρ 0.3 over three stages of 16 patches), one survives,
    and inference runs on it."""
    model = small_dyvm(pruning_loc=[1, 2, 3], token_keep_ratio=0.3).eval()
    assert model.keep_counts() == [4, 1, 1]
    with torch.no_grad():
        out = model.forward_inference(torch.randn(2, 3, model.img_size, model.img_size))
    assert [k.shape[1] for k in out.keep_indices] == [4, 1, 1]


def test_evaluation_counts_keep_score_ties_at_each_stage():
    """evaluate() reports, per pruning stage, the share of images whose keep-th and (keep+1)-th best keep scores are
    equal (keep_ties): where a predictor's keep log-probabilities saturate, inference's top-k keeps slots chosen by
    position among ties (spread evenly over them), which the demo's report then says. A fresh predictor ranks (no ties); one whose keep logit
    is far above its drop logit everywhere gives log p(keep) = 0 at every token, a tie in every image."""
    from dyvm.evaluate import cut_ties, evaluate

    assert cut_ties(torch.tensor([[0.0, 0.0, -1.0], [0.0, -1.0, -2.0]]), 1) == 1
    assert cut_ties(torch.tensor([[0.0, -1.0]]), 2) == 0  # every slot kept: no cut
    torch.manual_seed(0)
    model = small_dyvm(depth=4, pruning_loc=[1, 2, 3], token_keep_ratio=0.5).eval()
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,))) for _ in range(2)]
    assert evaluate(model, batches, torch.device("cpu"), progress=False)["keep_ties"] == [0.0, 0.0, 0.0]
    with torch.no_grad():
        for predictor in model.score_predictors:
            predictor.out_conv[4].bias.copy_(torch.tensor([40.0, -40.0]))
    assert evaluate(model, batches, torch.device("cpu"), progress=False)["keep_ties"] == [1.0, 1.0, 1.0]


def test_tied_keep_scores_spread_evenly_over_the_tied_slots():
    """Where the k-th best keep score ties with others, top_k_spreading_ties keeps the slots above it and spreads the
    rest evenly over the tied slots in slot order (static's integer linspace among them), whatever order a top-k
    would return ties in: a brute force over random tie patterns agrees, all-equal scores give static selection, and
    without ties it is the top-k."""
    from dyvm.dynamic import select_keep, top_k_spreading_ties

    assert top_k_spreading_ties(torch.zeros(1, 13), 4).tolist() == [[0, 4, 8, 12]]
    assert torch.equal(top_k_spreading_ties(torch.zeros(3, 49), 14), select_keep("static", None, torch.full((3,), 49), 14))
    assert top_k_spreading_ties(torch.tensor([[0.0, 0, 1, 0, 0, 0, 0]]), 3).tolist() == [[0, 2, 6]]
    assert top_k_spreading_ties(torch.tensor([[0.0, 0, 0, float("-inf"), float("-inf")]]), 2).tolist() == [[0, 2]]
    assert top_k_spreading_ties(torch.zeros(2, 5), 5).tolist() == [[0, 1, 2, 3, 4]] * 2
    gen = torch.Generator().manual_seed(0)
    distinct = torch.randn(6, 30, generator=gen)
    assert torch.equal(top_k_spreading_ties(distinct, 7), distinct.topk(7, dim=1).indices.sort(dim=1).values)
    for _ in range(300):
        n = int(torch.randint(2, 40, (1,), generator=gen))
        k = int(torch.randint(1, n, (1,), generator=gen))
        scores = torch.randint(0, 3, (2, n), generator=gen).float()
        for row, got in zip(scores, top_k_spreading_ties(scores, k).tolist()):
            cut = row.topk(k).values[-1]
            above = (row > cut).nonzero().flatten().tolist()
            tied = (row == cut).nonzero().flatten().tolist()
            need = k - len(above)
            assert got == sorted(above + [tied[i * (len(tied) - 1) // max(need - 1, 1)] for i in range(need)])


def test_a_saturated_keep_predictor_keeps_static_slots_fused_and_python(monkeypatch):
    """A keep predictor whose keep log-probabilities saturate (every score 0: ties in every image) keeps evenly spaced
    slots at every stage, as static selection does, in the fused extension stage and the Python path alike (before,
    the tied slots came in whatever order at::topk returned them: one block of the image, device-dependent)."""
    from dyvm.dynamic import select_keep
    from dyvm.models import dyvm as dyvm_mod
    from dyvm.models import vim as vim_mod

    monkeypatch.setattr(vim_mod.VisionMamba, "fused_stack", lambda *a, **k: None)
    torch.manual_seed(0)
    model = dyvm.create_model("dyvm_vim_tiny", img_size=32, patch_size=4, depth=4, embed_dim=32, num_classes=5,
                              pruning_loc=[1, 2, 3], token_keep_ratio=0.5).eval()
    with torch.no_grad():
        for predictor in model.score_predictors:
            predictor.out_conv[4].bias.copy_(torch.tensor([40.0, -40.0]))
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        fused = model.forward_inference(images)
        monkeypatch.setattr(dyvm_mod.DyVM, "_fused_stage", lambda *a: None)
        python = model.forward_inference(images)
    n = model.num_patches
    for stage, keep in enumerate(model.keep_counts()):
        static = select_keep("static", None, torch.full((3,), n), keep)
        assert torch.equal(fused.keep_indices_local[stage], static), stage
        assert torch.equal(python.keep_indices_local[stage], static), stage
        n = keep
    assert torch.equal(fused.logits, python.logits)


def test_the_dyvm_recipe_trains_a_tied_stage_on_the_slots_inference_keeps():
    """The `dyvm` recipe's top-k sampler draws no Gumbel noise (token_noise 0; the paper recipe's is 1): where the
    predictor's keep scores tie, training keeps the evenly spaced slots inference keeps, not noise-chosen ones."""
    from dyvm.engine import TrainConfig
    from dyvm.model_options import model_overrides

    configs = {name: TrainConfig(model="dyvm_vim_tiny", img_size=32, patch_size=4, depth=4, embed_dim=32,
                                 pruning_loc=[1, 2, 3], token_keep_ratio=0.5, recipe=name, token_sampler="topk")
               .resolved() for name in ("dyvm", "paper")}
    assert (configs["dyvm"].token_noise, configs["paper"].token_noise) == (0.0, 1.0)
    kept = {}
    for name, cfg in configs.items():
        torch.manual_seed(0)
        model = dyvm.create_model(cfg.model, num_classes=5, **model_overrides(cfg, dynamic=True))
        assert model.token_noise == cfg.token_noise
        with torch.no_grad():  # saturated keep log-probabilities: every score ties
            for predictor in model.score_predictors:
                predictor.out_conv[4].bias.copy_(torch.tensor([40.0, -40.0]))
        images = torch.randn(3, 3, 32, 32)
        torch.manual_seed(1)
        train = model.train().forward_train(images)
        with torch.no_grad():
            inf = model.eval().forward_inference(images, gates=train.gates.detach())
        n = model.keep_counts()[-1]
        kept[name] = torch.equal(train.current_pos[:, :n], inf.current_pos)
    assert kept == {"dyvm": True, "paper": False}


def test_tied_keep_predictors_are_reported_to_the_user():
    """A stage whose keep scores tie in most images keeps the same slots of every image, by position: `dyvm eval`'s
    report prints the tie share per stage and a note naming those stages, training's log records it per epoch
    (val_keep_ties) and warns after the last epoch; where every stage ranks most images there is no note."""
    from dyvm.engine import EpochResult, epoch_record
    from dyvm.evaluate import format_report, keep_ties_note

    assert keep_ties_note(None) is None and keep_ties_note([]) is None
    assert keep_ties_note([0.0, 0.5, 0.13]) is None  # half is not most
    note = keep_ties_note([1.0, 0.0, 0.97])
    assert "stage 1, stage 3" in note and "100%, 0%, 97%" in note and "--keep-ratio-source probabilities" in note
    report = dict(model="dyvm_vim_tiny", split="test", images=10, top1=80.0, top5=99.0, loss=0.5,
                  gflops_official=0.01, gflops_full=0.012, token_keep=[0.3, 0.1, 0.02], keep_ties=[1.0, 0.0, 0.97],
                  latency=[])
    text = format_report(report)
    assert "tied across the top-k cut, per stage: 100.0%, 0.0%, 97.0% of the images" in text
    assert "note: the keep predictor ties" in text
    assert "note:" not in format_report(dict(report, keep_ties=[0.0, 0.2, 0.0]))
    record = epoch_record(0, 1e-3, 1.0, EpochResult({"loss": 1.0}, 0), dict(top1=80.0, keep_ties=[1.0, 0.0, 0.97],
                                                                            token_keep=[0.3, 0.1, 0.02]))
    assert record["val_keep_ties"] == [1.0, 0.0, 0.97] and record["val_token_keep"] == [0.3, 0.1, 0.02]


def test_paired_comparison_of_two_models_image_by_image():
    """evaluate(hits=True) gives each image's top-1 hit in the loader's order (their mean is top-1), and
    paired_comparison counts the images only one model gets right with the exact two-sided McNemar p-value
    (the demo's claim check reads DyVM against each trained baseline this way)."""
    import math

    from dyvm.evaluate import evaluate, paired_comparison

    torch.manual_seed(0)
    model = small_dyvm(depth=4, pruning_loc=[1, 2, 3], token_keep_ratio=0.5).eval()
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,))) for _ in range(3)]
    stats = evaluate(model, batches, torch.device("cpu"), progress=False, hits=True)
    with torch.no_grad():
        want = torch.cat([model(x).argmax(1) == y for x, y in batches])
    assert stats["hits"].dtype == torch.bool and torch.equal(stats["hits"], want)
    assert abs(stats["top1"] - 100 * want.float().mean().item()) < 1e-9
    assert "hits" not in evaluate(model, batches, torch.device("cpu"), progress=False)

    a = torch.tensor([True] * 10 + [False] * 5 + [True] * 20)
    b = torch.tensor([False] * 10 + [False] * 5 + [True] * 20)
    r = paired_comparison(a, b)
    assert (r["images"], r["only_a"], r["only_b"]) == (35, 10, 0)
    assert r["p_value"] == pytest.approx(2 / 2 ** 10)  # all 10 discordant images one way: 2 · 0.5^10
    assert paired_comparison(b, a)["p_value"] == r["p_value"]  # two-sided: symmetric
    assert paired_comparison(a, a) == dict(images=35, only_a=0, only_b=0, p_value=1.0)
    c = torch.tensor([True, False] * 30)  # 30 / 30 discordant against its negation: no evidence at all
    assert paired_comparison(c, ~c)["p_value"] == 1.0
    # 6 against 2 discordant images: 2 · P(X <= 2), X ~ Bin(8, 1/2)
    d1 = torch.tensor([True] * 6 + [False] * 2)
    assert paired_comparison(d1, ~d1)["p_value"] == pytest.approx(2 * (1 + 8 + 28) / 256)
    assert math.isclose(paired_comparison(d1, ~d1)["p_value"], 0.2890625)
    with pytest.raises(ValueError, match="paired_comparison"):
        paired_comparison(a, b[:-1])
    from dyvm.demo import _paired_words  # the demo's claim check states both counts and the verdict

    words = _paired_words("static", dict(paired_vs_dyvm=dict(static=paired_comparison(d1, ~d1))))
    assert "DyVM alone is right on 6, static alone on 2" in words and "p = 0.29, within the test images' sampling" in words
    assert "more than the test images' sampling gives" in _paired_words("random", dict(paired_vs_dyvm=dict(random=r)))
    assert _paired_words("static", dict(paired_vs_dyvm={})) == ""
