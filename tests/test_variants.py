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
