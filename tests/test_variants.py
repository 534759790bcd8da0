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
        assert torch.allclose(p.grad, t["grads"][name], rtol=1e-3, atol=1e-4), name


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
            assert torch.allclose(p.grad, t["grads"][name], rtol=1e-3, atol=1e-4), name


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
