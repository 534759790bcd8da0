"""DyVM variants (VideoMamba, MambaReg, segmentation backbone) against the official oracles: eval
and train with replayed noise, decisions exact (README tolerances: states 1e-4, logits 2e-5)."""
import pytest
import torch

import dyvm
from test_dyvm import replay_noise

CLASSIFIERS = [("videomamba_small", "dyvm_videomamba_small"), ("mambareg_small", "dyvm_mambareg_small")]
STATE_ATOL, LOGIT_ATOL = 1e-4, 2e-5


def build(o, arch, mode):
    model = dyvm.create_model(arch, **o["config"])
    model.load_state_dict(o["state_dict"], strict=True)
    return model.train(mode == "train")


@pytest.mark.parametrize("prefix,arch", CLASSIFIERS)
def test_classifier_eval_matches_official(oracle, prefix, arch):
    e = oracle(f"{prefix}_eval")
    model = build(e, arch, "eval")
    with torch.no_grad():
        out = model.forward_inference(e["input"], return_layers=True)
    assert (out.logits - e["logits"]).abs().max() < LOGIT_ATOL
    assert torch.equal(out.gates, e["block_policy"].squeeze(2))
    assert (out.router_logits - e["block_logits"].squeeze(2)).abs().max() < 1e-5
    for k in range(3):
        assert torch.equal(out.keep_indices_local[k], e["keep_idx_local"][k])
        assert torch.equal(out.keep_indices[k], e["keep_idx_orig"][k])
        assert (out.pred_scores[k] - e["pred_scores"][k]).abs().max() < 1e-5
    for i in range(4):
        assert (out.layer_hidden[i] - e["layer_hidden"][i]).abs().max() < STATE_ATOL
        assert (out.layer_residual[i] - e["layer_residual"][i]).abs().max() < STATE_ATOL
    prefix_features = out.features.prefix()
    if "register_positions" in e:
        assert [p.tolist() for p in out.prefix_positions] == [p.tolist() for p in e["register_positions"]]
        assert (prefix_features - e["neck_input"]).abs().max() < STATE_ATOL
        head_input = model.forward_head(prefix_features, pre_logits=True)
        assert (head_input - e["head_input"]).abs().max() < STATE_ATOL
    else:
        assert out.cls_positions == e["cls_token_position"]
        assert (prefix_features[:, 0] - e["cls_feature"]).abs().max() < STATE_ATOL
    with torch.no_grad():
        assert torch.equal(model(e["input"]), out.logits)


@pytest.mark.parametrize("prefix,arch", CLASSIFIERS)
def test_classifier_train_matches_official_with_replayed_noise(oracle, prefix, arch):
    t = oracle(f"{prefix}_train")
    model = build(t, arch, "train")
    out = model(t["input"], noise=replay_noise(t))
    assert (out.logits - t["logits"]).abs().max() < LOGIT_ATOL
    assert (out.tokens - t["other_t"]).abs().max() < STATE_ATOL
    assert torch.equal(out.token_policy, t["token_policy"])
    assert torch.equal(out.current_pos, t["current_pos"])
    assert torch.equal(out.gates, t["block_policy"].squeeze(2))
    for k in range(3):
        assert torch.equal(out.decisions[k], t["pred_decisions"][k])
    if "stage_register_positions" in t:
        assert torch.equal(out.prefix_pos, t["stage_register_positions"][-1])
    else:
        assert torch.equal(out.cls_pos, t["stage_cls_token_position"][-1])
    loss = out.logits.square().mean() + sum(d.mean() for d in out.decisions) + out.gates.mean()
    assert abs(loss.item() - t["grad_loss"].item()) < 1e-5
    loss.backward()
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, t["grads"][name], rtol=1e-4, atol=2e-5), name


def test_segmentation_eval_matches_official(oracle):
    e = oracle("seg_small_eval")
    model = build(e, "dyvm_vim_seg_small", "eval")
    with torch.no_grad():
        out = model.forward_dense(e["input"], return_layers=True)
        assert all(torch.equal(a, b) for a, b in zip(model(e["input"]), out.features))
    assert len(out.features) == 4
    for mine, ref in zip(out.features + out.features_pre_neck, e["features"] + e["features_pre_neck"]):
        assert mine.shape == ref.shape and (mine - ref).abs().max() < STATE_ATOL
    assert torch.equal(out.gates, e["block_policy"].squeeze(2))
    assert (out.router_logits - e["block_logits"].squeeze(2)).abs().max() < 1e-5
    for k in range(3):
        assert torch.equal(out.keep_indices[k], e["keep_idx"][k])
        assert torch.equal(out.decisions[k], e["keep_mask"][k].to(out.decisions[k].dtype))
        assert (out.pred_scores[k] - e["pred_scores"][k]).abs().max() < 1e-5
    for i in range(4):
        assert (out.layer_hidden[i] - e["layer_hidden"][i]).abs().max() < STATE_ATOL
        assert (out.layer_residual[i] - e["layer_residual"][i]).abs().max() < STATE_ATOL


def test_segmentation_train_matches_official_with_replayed_noise(oracle):
    from dyvm.losses import segmentation_ratio_losses

    t = oracle("seg_small_train")
    model = build(t, "dyvm_vim_seg_small", "train")
    out = model.forward_dense(t["input"], noise=replay_noise(t), return_layers=True)
    for mine, ref in zip(out.features + out.features_pre_neck, t["features"] + t["features_pre_neck"]):
        assert (mine - ref).abs().max() < STATE_ATOL
    assert torch.equal(out.gates, t["block_policy"].squeeze(2))
    for k in range(3):
        assert torch.equal(out.decisions[k], t["pred_decisions"][k])
    for i in range(4):  # the new_order layout: pruned slots exactly 0 in both streams
        assert (out.layer_hidden[i] - t["layer_hidden"][i]).abs().max() < STATE_ATOL
        assert (out.layer_residual[i] - t["layer_residual"][i]).abs().max() < STATE_ATOL
        pruned = t["layer_mask"][i] == 0
        assert (out.layer_hidden[i][pruned] == 0).all() and (out.layer_residual[i][pruned] == 0).all()
    bn = model.fpn1[1]
    assert torch.allclose(bn.running_mean, t["bn_running_mean_after"], atol=1e-5)
    assert torch.allclose(bn.running_var, t["bn_running_var_after"], atol=1e-5)
    token_loss, block_loss = segmentation_ratio_losses(out.decisions, out.gates, model.token_ratio)
    assert abs(token_loss.item() - t["token_ratio_loss"].item()) < 1e-6
    assert abs(block_loss.item() - t["block_ratio_loss"].item()) < 1e-6
    loss = sum(f.square().mean() for f in out.features) + token_loss + block_loss
    assert abs(loss.item() - t["grad_loss"].item()) < 1e-4
    loss.backward()
    for name, p in model.named_parameters():
        if name in t["params_without_grad"]:
            assert p.grad is None, name
        else:
            assert torch.allclose(p.grad, t["grads"][name], rtol=1e-4, atol=2e-5), name


@pytest.mark.parametrize("arch,teacher,dyvm_beta1,dyvm_default", [
    ("dyvm_mambareg_small", 5.360, 3.628, 3.513), ("dyvm_mambareg_base", 19.918, 13.476, 13.058),
    ("dyvm_videomamba_tiny", 1.449, 1.279, None), ("dyvm_videomamba_small", 5.077, 3.345, None)])
def test_official_flops_of_variants(arch, teacher, dyvm_beta1, dyvm_default):
    from dyvm.flops import count_flops

    assert round(count_flops(dyvm.create_model(arch[len("dyvm_"):])), 3) == teacher
    model = dyvm.create_model(arch)
    assert round(count_flops(model, branch_keep_ratio=1.0), 3) == dyvm_beta1
    if dyvm_default is not None:  # at the preset β
        assert round(count_flops(model), 3) == dyvm_default


def test_segmentation_flops_count_backbone_neck_and_all_position_predictors():
    from dyvm.flops import flops_breakdown

    model = dyvm.create_model("dyvm_vim_seg_tiny", depth=4, pruning_loc=[1, 2, 3], img_size=128,
                              out_indices=[0, 1, 2, 23])
    parts = flops_breakdown(model, branch_keep=1.0)
    d, m = 192, 64
    assert parts["head"] == d * d * 4 * (m + 4 * m + m)
    assert parts["predictors"] == 3 * m * (d * d + d * (d // 2) + (d // 2) * (d // 4) + (d // 4) * 2)
    assert parts["in_proj"] == sum([m] + model.keep_counts()) * d * 2 * 2 * d


# ------------------------------------------------------------------------------ token layouts
def test_mambareg_layout_at_224_follows_the_official_rule():
    from dyvm.models.tokens import InterleavedRegisters

    layout = InterleavedRegisters(12)
    counts = torch.tensor([196, 137, 96, 67])
    pos = layout.positions(counts)
    assert pos[0].tolist() == [16 * (i + 1) - 1 for i in range(12)]          # 15, 31, ..., 191
    assert pos[1].tolist() == [11 * i + 10 for i in range(12)]
    assert pos[2].tolist() == [8 * i + 7 for i in range(12)]
    assert pos[3].tolist() == [6 * i + 5 for i in range(12)]
    model = dyvm.create_model("dyvm_mambareg_small", depth=4, pruning_loc=[1, 2, 3])
    assert model.embed(torch.zeros(1, 3, 224, 224)).shape[1] == 208


@pytest.mark.parametrize("layout_name", ["MiddleClassToken", "HeadClassToken", "InterleavedRegisters", "NoPrefix"])
def test_token_sequence_operations(layout_name):
    """split ∘ insert is the identity; select keeps the prefix and the chosen patches in order;
    rearrange puts kept patches first, prefix tokens where the layout says, and masks the rest."""
    from dyvm.models import tokens

    layout = tokens.InterleavedRegisters(3) if layout_name == "InterleavedRegisters" else getattr(tokens, layout_name)()
    torch.manual_seed(0)
    b, m, d, p = 2, 11, 5, layout.num_prefix
    prefix, patches = torch.randn(b, p, d), torch.randn(b, m, d)
    seq = tokens.TokenSequence.from_parts(prefix, patches, layout)
    seq.residual = seq.hidden * 2
    assert torch.equal(seq.prefix(), prefix) and torch.equal(seq.patches(), patches)
    keep = torch.tensor([[0, 3, 4, 9], [1, 2, 7, 10]])
    sel = seq.select(keep)
    assert torch.equal(sel.patches(), patches.gather(1, keep[..., None].expand(-1, -1, d)))
    assert torch.equal(sel.prefix(), prefix) and torch.equal(sel.residual, sel.hidden * 2)
    assert torch.equal(sel.prefix_pos, layout.positions(torch.tensor([4, 4])))
    # inference's shared-positions path (every image has its prefix at the same places): the same sequence
    shared = seq.prefix_pos[0].tolist()
    assert torch.equal(seq.patches(seq.residual, shared), seq.patches(seq.residual))
    fast = seq.select(keep, shared)
    for name in ("hidden", "residual", "prefix_pos", "patch_ids"):
        assert torch.equal(getattr(fast, name), getattr(sel, name)), name
    again = fast.select(torch.tensor([[0, 2], [1, 3]]), fast.prefix_pos[0].tolist())
    slow = sel.select(torch.tensor([[0, 2], [1, 3]]))
    assert torch.equal(again.hidden, slow.hidden) and torch.equal(again.prefix_pos, slow.prefix_pos)
    decision = torch.zeros(b, m)
    decision[0, [1, 5, 6]] = 1
    decision[1, [0, 2, 4, 8, 10]] = 1
    re = seq.rearrange(decision)
    assert torch.equal(re.prefix_pos, layout.positions(torch.tensor([3, 5])))
    assert re.patch_ids[0, :3].tolist() == [1, 5, 6] and re.patch_ids[1, :5].tolist() == [0, 2, 4, 8, 10]
    assert torch.equal(re.patches(), patches.gather(1, re.patch_ids[..., None].expand(-1, -1, d)))
    assert torch.equal(re.prefix(), prefix)
    assert torch.equal(re.mask.sum((1, 2)), torch.tensor([3.0 + p, 5.0 + p]))
    assert torch.equal(re.prefix(re.mask)[..., 0], torch.ones(b, p))


@pytest.mark.parametrize("arch", ["dyvm_videomamba_tiny", "dyvm_mambareg_small"])
def test_variant_training_path_equals_inference_path(arch):
    """With the same keep sets and gates, the masked rearranged training forward gives the logits
    and kept tokens of the physically pruned inference forward (the consistency argument)."""
    torch.manual_seed(1)
    img = 64 if "mambareg" in arch else 32
    extra = dict(patch_size=8, stride=8) if "videomamba" in arch else {}
    model = dyvm.create_model(arch, img_size=img, depth=4, embed_dim=32, num_classes=5, pruning_loc=[1, 2, 3],
                              **extra)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    m, batch = model.num_patches, 2
    x = torch.randn(batch, 3, img, img)
    keep, prev = [], torch.ones(batch, m, dtype=torch.bool)
    for _ in range(3):
        prev = prev & (torch.rand(batch, m) < 0.7)
        keep.append(prev)
    gates = (torch.rand(4, batch, 2) < 0.6).float()
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
        assert torch.equal(train.prefix_pos[b], inf.prefix_positions[-1])


# ------------------------------------------------------------------------ predictor ablations
def _direction_averaged_stats(mixer, xz, prefix_pos):
    """B̄ and Δ̄ (pre-bias, pre-softplus) from first principles (F.conv1d), prefix columns removed."""
    import torch.nn.functional as F

    e, r, n = mixer.d_inner, mixer.dt_rank, mixer.d_state
    out = []
    for suffix, flip in (("", False), ("_b", True)):
        x = xz[..., :e].transpose(1, 2)
        x = x.flip(-1) if flip else x
        conv = getattr(mixer, "conv1d" + suffix)
        u = F.silu(F.conv1d(x, conv.weight, conv.bias, padding=3, groups=e)[..., :x.shape[-1]])
        dbl = F.linear(u.transpose(1, 2), getattr(mixer, "x_proj" + suffix).weight)
        b_mat = dbl[..., r:r + n]
        delta = F.linear(dbl[..., :r], getattr(mixer, "dt_proj" + suffix).weight)
        out.append((b_mat.flip(1), delta.flip(1)) if flip else (b_mat, delta))
    b_bar, d_bar = (out[0][0] + out[1][0]) / 2, (out[0][1] + out[1][1]) / 2
    keep = torch.ones(xz.shape[1], dtype=torch.bool)
    keep[prefix_pos] = False
    return b_bar[:, keep], d_bar[:, keep]


@pytest.mark.parametrize("source,width", [("B", 16), ("delta", 64)])
def test_predictor_input_ablations_read_the_preceding_layer(source, width):
    """Predictor-B / Predictor-Δ (variants.md §5.1): the stage-k predictor reads the direction-
    averaged B (N = 16 channels) or pre-softplus Δ (2D channels) of layer pruning_loc[k] − 1,
    class column removed; token pruning only (no routers)."""
    torch.manual_seed(0)
    model = dyvm.create_model("dyvm_vim_tiny", img_size=32, patch_size=8, depth=3, embed_dim=32, num_classes=4,
                              pruning_loc=[1, 2], predictor_input=source, use_routers=False).eval()
    assert model.score_predictors[0].in_conv[0].normalized_shape == (width,)
    assert model.layers[0].mixer.block_head is None
    seen, xz = [], []
    model.score_predictors[0].register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    model.layers[0].mixer.in_proj.register_forward_hook(lambda mod, args, out: xz.append(out))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.forward_inference(x)
        b_bar, d_bar = _direction_averaged_stats(model.layers[0].mixer, xz[0], model.num_patches // 2)
    expected = b_bar if source == "B" else d_bar
    assert seen[0].shape == (2, 16, width) and torch.allclose(seen[0], expected, atol=1e-5)
    assert [k.shape[1] for k in out.keep_indices] == model.keep_counts()
    train = model.train().forward_train(x)  # trains end to end: the predictors get gradients
    (train.logits.square().mean() + sum(d.mean() for d in train.decisions)).backward()
    assert model.score_predictors[1].out_conv[4].weight.grad.abs().sum() > 0
    assert dyvm.create_model("dyvm_vim_tiny", depth=2, pruning_loc=[1], predictor_input=source) \
        .config["predictor_input"] == source
    with pytest.raises(ValueError, match="predictor_input"):
        dyvm.create_model("dyvm_vim_tiny", depth=2, pruning_loc=[1], predictor_input="C")


# ------------------------------------------------------------------------ losses, checkpoints
def test_segmentation_loss_uses_the_official_weights():
    import torch.nn.functional as F

    from dyvm.losses import segmentation_loss

    torch.manual_seed(0)
    decode, aux = torch.randn(2, 5, 8, 8), torch.randn(2, 5, 8, 8)
    target = torch.randint(0, 5, (2, 32, 32))
    target[0, :4] = 255  # ignored pixels
    decisions = [(torch.rand(2, 16) < r).float() for r in (0.9, 0.8, 0.7)]
    gates = (torch.rand(4, 2, 2) < 0.7).float()
    ratios = [0.9, 0.81, 0.729]
    loss, parts = segmentation_loss(decode, aux, target, decisions, gates, ratios)
    up = lambda t: F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)  # noqa: E731
    expected = (F.cross_entropy(up(decode), target, ignore_index=255)
                + 0.4 * F.cross_entropy(up(aux), target, ignore_index=255)
                + 20 * sum(((d.mean(1) - r) ** 2).mean() for d, r in zip(decisions, ratios)) / 3
                + 20 * (gates.mean() - 0.8) ** 2)
    assert abs(loss.item() - expected.item()) < 1e-5
    assert abs(sum(parts.values()) - expected.item()) < 1e-5 and parts["block_ratio"] > 0


def test_segmentation_init_from_a_classification_checkpoint(tmp_path):
    """The official loader: head and class token dropped, row 0 of a 197-style pos_embed dropped
    (not the middle class row), the patch rows resized bicubically; routers reset to 0 / 5."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    with pytest.raises(ValueError, match="out_indices"):  # 2 maps for a neck of 4
        dyvm.create_model("dyvm_vim_seg_tiny", img_size=64, patch_size=8, depth=2, embed_dim=32, pruning_loc=[1],
                          out_indices=[0, 23])
    vim = dyvm.create_model("vim_tiny", img_size=32, patch_size=8, depth=5, embed_dim=32, num_classes=3)
    path = tmp_path / "vim.pth"
    torch.save({"model": vim.state_dict()}, path)
    seg = dyvm.create_model("dyvm_vim_seg_tiny", img_size=64, patch_size=8, depth=5, embed_dim=32,
                            pruning_loc=[1, 2], out_indices=[0, 1, 2, 23], pretrained=str(path))
    grid = vim.pos_embed.detach()[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 64, 32)
    assert torch.allclose(seg.pos_embed.detach(), expected, atol=1e-6)
    assert torch.equal(seg.layers[3].mixer.in_proj.weight, vim.layers[3].mixer.in_proj.weight)
    assert all(bool((layer.mixer.block_head.bias == 5).all()) for layer in seg.layers)
    assert not hasattr(seg, "cls_token")


@pytest.mark.parametrize("arch,class_row", [("videomamba_tiny", 0), ("vim_tiny", "middle"), ("mambareg_small", None)])
def test_checkpoint_filter_resizes_pos_embed_per_family(arch, class_row):
    extra = dict(patch_size=8, stride=8) if arch != "mambareg_small" else {}
    size = (64, 128) if arch == "mambareg_small" else (32, 64)
    small = dyvm.create_model(arch, img_size=size[0], depth=1, embed_dim=32, num_classes=3, **extra)
    big = dyvm.create_model(arch, img_size=size[1], depth=1, embed_dim=32, num_classes=3, **extra)
    report = dyvm.load_checkpoint(big, {"model": small.state_dict()})
    assert report.resized == ["pos_embed"]
    old, new = small.pos_embed.detach(), big.pos_embed.detach()
    if class_row == 0:
        assert torch.equal(new[:, 0], old[:, 0])
    elif class_row == "middle":
        assert torch.equal(new[:, big.num_patches // 2], old[:, small.num_patches // 2])
    else:
        assert new.shape[1] == big.num_patches and torch.equal(big.pos_embed_cls, small.pos_embed_cls)


@pytest.mark.parametrize("arch", ["dyvm_mambareg_small", "dyvm_videomamba_tiny", "dyvm_vim_seg_tiny"])
def test_variant_checkpoints_rebuild_the_same_model(tmp_path, arch):
    from dyvm.checkpoint import model_from_checkpoint, save_checkpoint

    kw = dict(img_size=64, depth=4, embed_dim=32, pruning_loc=[1, 2, 3])
    kw.update(out_indices=[0, 1, 2, 23]) if "seg" in arch else kw.update(num_classes=4)
    torch.manual_seed(0)
    model = dyvm.create_model(arch, token_keep_ratio=0.8, **kw).eval()
    save_checkpoint(tmp_path / "c.pth", model)
    again, _ = model_from_checkpoint(tmp_path / "c.pth")
    assert type(again) is type(model) and again.config == model.config
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), again.eval()(x)
    for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
        assert torch.equal(u, v)


@pytest.mark.parametrize("arch,kwargs,match", [
    ("dyvm_mambareg_small", dict(cls_reduce=1), "cls_reduce"), ("dyvm_mambareg_small", dict(cls_reduce=5), "divide"),
    ("dyvm_mambareg_small", dict(stride=8), "stride"), ("dyvm_vim_seg_tiny", dict(if_cls_token=True), "if_cls_token"),
    ("dyvm_videomamba_tiny", dict(use_middle_cls_token=True), "use_middle_cls_token"),
    ("vim_tiny", dict(if_cls_token=False), "if_cls_token"),
    ("dyvm_vim_seg_tiny", dict(predictor_input="B"), "predictor_input")])
def test_bad_variant_arguments(arch, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dyvm.create_model(arch, depth=4, pruning_loc=[1, 2, 3], **kwargs) if arch.startswith("dyvm") else \
            dyvm.create_model(arch, depth=1, **kwargs)


def test_is_dynamic_is_the_one_question():
    for name in dyvm.list_models():
        model_cls = type(dyvm.create_model(name, depth=4, img_size=64, **({"pruning_loc": [1, 2, 3]}
                                           if name.startswith("dyvm") else {}),
                                           **({"out_indices": [0, 1, 2, 23]} if "seg" in name else {})))
        assert model_cls.is_dynamic == name.startswith("dyvm_"), name


def test_model_config_is_typed_and_rebuilds():
    from dyvm.models import ModelConfig

    model = dyvm.create_model("dyvm_mambareg_small", depth=4, pruning_loc=[1, 2, 3], img_size=64)
    assert isinstance(model.config, ModelConfig)
    kwargs = dict(model.config)
    assert kwargs["num_cls_tokens"] == 12 and kwargs["cls_reduce"] == 2 and "out_indices" not in kwargs
    assert dyvm.create_model("dyvm_mambareg_small", **kwargs).config == model.config
    assert "pruning_loc" not in dict(dyvm.create_model("vim_tiny", depth=1).config)
    with pytest.raises(KeyError, match="not_a_field"):
        model.config["not_a_field"] = 1


def test_segmentation_keeps_tokens_by_its_predictor_only():
    model = dyvm.create_model("dyvm_vim_seg_tiny", img_size=64, depth=4, embed_dim=32, pruning_loc=[1, 2, 3],
                              out_indices=[0, 1, 2, 23]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model(x)
    assert [tuple(f.shape) for f in maps] == [(1, 32, 16, 16), (1, 32, 8, 8), (1, 32, 4, 4), (1, 32, 2, 2)]
    model.configure(score="random")
    with pytest.raises(ValueError, match="predictor only"):
        model(x)
