"""DyVM losses: each term against its formula, gradients, distillation from the frozen teacher."""
import pytest
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

import dyvm
from dyvm.losses import DyVMLoss, block_ratio_loss, kept_token_mse, token_ratio_loss


def test_terms_match_formulas():
    dec = [torch.tensor([[1., 1, 0, 0], [1, 1, 1, 0]]), torch.tensor([[1., 0, 0, 0], [1, 1, 0, 0]])]
    expected = ((0.5 - 0.75) ** 2 + (0.75 - 0.75) ** 2) / 2 + ((0.25 - 0.5) ** 2 + (0.5 - 0.5) ** 2) / 2
    assert token_ratio_loss(dec, [0.75, 0.5]).item() == pytest.approx(expected)
    gates = torch.tensor([[[1., 0], [1, 1]], [[0., 0], [1, 1]]])
    assert block_ratio_loss(gates, 0.8).item() == pytest.approx((5 / 8 - 0.8) ** 2)
    tokens = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    teacher = torch.zeros(2, 3, 2)
    teacher[0, 2] = 1.0
    policy = torch.tensor([[[1.], [0], [0]], [[1.], [1], [0]]])
    pos = torch.tensor([[2, 0, 1], [0, 1, 2]])
    kept = torch.stack([tokens[0, 0] - 1.0, tokens[1, 0], tokens[1, 1]])
    assert kept_token_mse(tokens, policy, pos, teacher).item() == pytest.approx(kept.square().mean().item())
    assert kept_token_mse(tokens, torch.zeros_like(policy), pos, teacher).item() == 0.0


def oracle_pair(oracle):
    o = oracle("vim_small")
    teacher = dyvm.create_model("vim_small", **o["config"])
    teacher.load_state_dict(o["state_dict"])
    student = dyvm.create_model("dyvm_vim_small", **o["config"], pruning_loc=[1, 2, 3],
                                token_ratio=[0.75, 0.5625, 0.421875])
    dyvm.load_checkpoint(student, {"model": o["state_dict"]})
    return o, teacher, student


def test_student_equal_to_teacher_has_zero_distillation(oracle):
    o, teacher, student = oracle_pair(oracle)
    out = student.train().forward_train(o["input"], keep_masks=[torch.ones(3, 16, dtype=torch.bool)] * 3,
                                        gates=torch.ones(4, 3, 2))
    crit = DyVMLoss.for_model(student, torch.nn.CrossEntropyLoss(), teacher)
    _, parts = crit(o["input"], out, torch.tensor([1, 2, 3]))
    assert parts["kl"] < 1e-9 and parts["token_mse"] < 1e-9
    assert parts["block_ratio"] == pytest.approx((1 - 0.8) ** 2)


def test_full_loss_and_gradients(oracle):
    o, teacher, student = oracle_pair(oracle)
    student.train()
    torch.manual_seed(0)
    out = student(o["input"], noise=torch.Generator().manual_seed(3))
    targets = F.one_hot(torch.tensor([1, 2, 3]), 10).float() * 0.9 + 0.01
    crit = DyVMLoss.for_model(student, SoftTargetCrossEntropy(), teacher)
    loss, parts = crit(o["input"], out, targets)
    with torch.no_grad():
        t = teacher.forward_detailed(o["input"])
    expected = (SoftTargetCrossEntropy()(out.logits, targets)
                + 10 * token_ratio_loss(out.decisions, student.token_ratio) / 3
                + 10 * block_ratio_loss(out.gates, 0.8)
                + 0.5 * (F.kl_div(F.log_softmax(out.logits, -1), F.log_softmax(t.logits, -1), reduction="batchmean",
                                  log_target=True)
                         + kept_token_mse(out.tokens, out.token_policy, out.current_pos, t.tokens)))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(parts) == {"cls", "token_ratio", "block_ratio", "kl", "token_mse", "loss"}
    loss.backward()
    for name, p in student.named_parameters():
        assert p.grad is not None, name
    assert all(p.grad.abs().sum() > 0 for p in student.score_predictors.parameters())
    assert student.layers[2].mixer.block_head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_ablation_variants(oracle):
    o = oracle("vim_small")
    token_only = dyvm.create_model("dyvm_vim_small", **o["config"], pruning_loc=[1, 2, 3], use_routers=False)
    block_only = dyvm.create_model("dyvm_vim_small", **o["config"], use_pruning=False)
    assert not any("block_head" in k for k in token_only.state_dict())
    assert not any("score_predictors" in k for k in block_only.state_dict())
    ce = torch.nn.CrossEntropyLoss()
    for model, keys in [(token_only, {"cls", "token_ratio", "kl", "token_mse", "loss"}),
                        (block_only, {"cls", "block_ratio", "kl", "loss"})]:
        dyvm.load_checkpoint(model, {"model": o["state_dict"]})
        out = model.train()(o["input"])
        teacher = dyvm.create_model("vim_small", **o["config"])
        _, parts = DyVMLoss.for_model(model, ce, teacher)(o["input"], out, torch.tensor([0, 1, 2]))
        assert set(parts) == keys
    with pytest.raises(ValueError, match="token_weight"):
        DyVMLoss(ce, None, [0.7], 0.8, token_weight=-1)
