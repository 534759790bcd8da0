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
    # the teacher runs the inference path (RMSNorm in one pass of the extension), the student in training ATen's
    # float32 norm: the two agree to float rounding (8e-8 in the KL here), far below what a wrong target gives
    assert parts["kl"] < 1e-6 and parts["token_mse"] < 1e-6
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


def test_teacher_memo_returns_the_teachers_outputs_and_bounds_its_store():
    from dyvm.losses import TeacherMemo

    TeacherMemo.clear()
    torch.manual_seed(0)
    kw = dict(img_size=16, patch_size=4, depth=2, embed_dim=32, num_classes=5)
    teacher = dyvm.create_model("vim_tiny", **kw).eval()
    memo = TeacherMemo(teacher, max_mb=1)
    x, y = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        want = teacher.forward_detailed(x)
    first, again = memo(x), memo(x.clone())
    assert (memo.misses, memo.hits) == (1, 1) and again is first
    assert torch.equal(first.logits, want.logits) and torch.equal(first.tokens, want.tokens)
    memo(y)
    assert memo.misses == 2
    other = dyvm.create_model("vim_tiny", **kw).eval()  # other weights: never served the first one's outputs
    other_memo = TeacherMemo(other, max_mb=1)
    with torch.no_grad():
        assert torch.equal(other_memo(x).logits, other.forward_detailed(x).logits)
    assert other_memo.misses == 1 and other_memo.fingerprint != memo.fingerprint
    per_entry = first.logits.nbytes + first.tokens.nbytes
    small = TeacherMemo(teacher, max_mb=2.5 * per_entry / 2 ** 20)  # room for two entries
    TeacherMemo.clear()
    for t in (x, y, x + 1):
        small(t)
    assert TeacherMemo._bytes <= small.max_bytes and len(TeacherMemo._store) == 2
    small(x), small(y), small(x + 1)  # the first two stay; the third was never stored
    assert (small.hits, small.misses) == (2, 4)
    with pytest.raises(ValueError, match="teacher_cache_mb"):
        TeacherMemo(teacher, max_mb=0)
    TeacherMemo.clear()


def test_teacher_memo_leaves_training_unchanged(tmp_path, fashion_mnist):
    """Two fine-tunes with the same seed see the same batches: the second is served by the memo (every
    teacher forward a hit), and each ends where the same run without the memo ends, bit for bit; so do
    the trained random baseline's (its selection draws from the per-sample noise, not the augmentations' RNG)."""
    from dyvm.losses import TeacherMemo

    common = dict(img_size=28, patch_size=7, depth=2, embed_dim=32, batch_size=32, subset=128, val_size=200,
                  eval_batch_size=200, mixup=0.0, cutmix=0.0, aa="none", reprob=0.0, repeated_aug=1,
                  no_progress=True, threads=1, seed=0, dataset="fashion-mnist", epochs=1)
    dyvm.train(model="vim_tiny", output=str(tmp_path / "vim"), lr=2e-3, **common)
    ft = dict(common, model="dyvm_vim_tiny", checkpoint=str(tmp_path / "vim" / "best.pth"), pruning_loc=[1],
              token_keep_ratio=0.5)
    TeacherMemo.clear()
    calls = []
    real = TeacherMemo.__call__
    TeacherMemo.__call__ = lambda self, x: (calls.append(self), real(self, x))[1]
    try:
        dyvm.train(output=str(tmp_path / "a"), teacher_cache_mb=64, **ft)
        dyvm.train(output=str(tmp_path / "b"), teacher_cache_mb=64, score="random", **ft)
    finally:
        TeacherMemo.__call__ = real
    memos = list(dict.fromkeys(calls))
    assert len(memos) == 2 and memos[0].misses == 4 and memos[1].hits == 4 and memos[1].misses == 0
    TeacherMemo.clear()
    dyvm.train(output=str(tmp_path / "c"), **ft)
    dyvm.train(output=str(tmp_path / "d"), score="random", **ft)
    for cached, plain in (("a", "c"), ("b", "d")):
        a = torch.load(tmp_path / cached / "best.pth", map_location="cpu", weights_only=False)["model"]
        b = torch.load(tmp_path / plain / "best.pth", map_location="cpu", weights_only=False)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cost_weighted_branch_loss_counts_each_layer_by_its_branch_cost():
    # gates (depth 2, B 2, 2 directions): layer 0 all on, layer 1 half on
    gates = torch.tensor([[[1., 1], [1, 1]], [[1., 0], [0, 1]]])
    w = torch.tensor([3.0, 1.0])
    assert block_ratio_loss(gates, 0.8, w).item() == pytest.approx(((3 * 1.0 + 1 * 0.5) / 4 - 0.8) ** 2)
    assert block_ratio_loss(gates, 0.8, torch.ones(2)).item() == pytest.approx(block_ratio_loss(gates, 0.8).item())
    # a DyVM pruning before its last three layers: each layer's weight is one branch's inference MACs at its length
    from dyvm.flops import _branch_macs, sequence_lengths
    from dyvm.losses import branch_cost_weights

    model = dyvm.create_model("dyvm_vim_tiny", img_size=28, patch_size=4, in_chans=1, depth=8, embed_dim=64,
                              num_classes=10, pruning_loc=[5, 6, 7], token_keep_ratio=0.3)
    mixer = model.layers[0].mixer
    lengths = sequence_lengths(model, model.num_patches)
    assert lengths == [50] * 5 + [15, 5, 2]
    expected = [sum(_branch_macs(n, mixer.d_inner, mixer.dt_rank, mixer.d_state).values()) for n in lengths]
    assert branch_cost_weights(model).tolist() == expected
    ce = torch.nn.CrossEntropyLoss()
    assert DyVMLoss.for_model(model, ce).block_layer_weights is None          # the paper: layers alike
    weighted = DyVMLoss.for_model(model, ce, block_loss_weighting="cost")
    assert weighted.block_layer_weights.tolist() == expected
    # skipping every branch of the three pruned layers is 3/8 of the branches but a small share of their cost
    late_off = torch.ones(8, 4, 2)
    late_off[5:] = 0
    assert block_ratio_loss(late_off, 0.8).item() == pytest.approx((5 / 8 - 0.8) ** 2)
    share = sum(expected[:5]) / sum(expected)
    assert share > 0.9
    assert block_ratio_loss(late_off, 0.8, weighted.block_layer_weights).item() == pytest.approx((share - 0.8) ** 2)
    with pytest.raises(ValueError, match="block_loss_weighting"):
        DyVMLoss.for_model(model, ce, block_loss_weighting="tokens")
