"""Teacher-guided keep predictors (``--keep-guidance``): the teacher's class-token influence, the stages' slot views
the loss reads, the loss itself, its gradient and its options."""
import pytest
import torch
import torch.nn.functional as F

import dyvm
from dyvm.engine import TrainConfig, _check_config
from dyvm.kernels import selective_scan
from dyvm.losses import DyVMLoss, TeacherMemo, keep_guidance_loss, teacher_keep_scores, teacher_outputs
from dyvm.models import StageSlots
from dyvm.models.tokens import kept_first_order

SMALL = dict(img_size=28, patch_size=4, in_chans=1, depth=6, embed_dim=32, num_classes=10)


def _perturbed_decays(mixer):
    with torch.no_grad():  # trained-looking decay rates, not the init's 1..N
        for A_log in (mixer.A_log, mixer.A_b_log):
            A_log.add_(torch.randn_like(A_log) * 0.5)


def _pair(seed=0, **dyvm_options):
    """A Vim teacher with perturbed decays and a DyVM student with the teacher's weights (3 stages)."""
    torch.manual_seed(seed)
    teacher = dyvm.create_model("vim_tiny", **SMALL).eval()
    for layer in teacher.layers:
        _perturbed_decays(layer.mixer)
    options = dict(pruning_loc=[1, 3, 5], token_keep_ratio=0.7, block_keep_ratio=0.8, token_sampler="topk",
                   token_noise=0.0, drop_pruned_tail=True)
    student = dyvm.create_model("dyvm_vim_tiny", **SMALL, **dict(options, **dyvm_options))
    student.load_state_dict(teacher.state_dict(), strict=False)
    return teacher, student.train()


def test_token_influence_equals_the_scan_one_token_at_a_time():
    torch.manual_seed(0)
    mixer = dyvm.create_model("vim_tiny", img_size=16, patch_size=4, depth=1, embed_dim=32).layers[0].mixer.eval()
    _perturbed_decays(mixer)
    u = torch.randn(2, 17, 32)
    position = 8
    with torch.no_grad():
        fast = mixer.token_influence(u, position, chunk=1)
        x, z = mixer.in_proj(u).chunk(2, -1)
        slow = torch.zeros(2, 17)
        for j in range(17):
            y = 0
            for backward in (False, True):
                s = "_b" if backward else ""
                inp, delta, B, C = mixer._ssm_inputs(backward, x.transpose(1, 2), None)
                only = torch.zeros_like(inp)
                only[..., j] = inp[..., j]
                A = -torch.exp(getattr(mixer, "A_b_log" if backward else "A_log"))
                y = y + selective_scan(only, delta, A, B.transpose(1, 2), C.transpose(1, 2), torch.zeros_like(mixer.D),
                                       z.transpose(1, 2), getattr(mixer, "dt_proj" + s).bias, delta_softplus=True,
                                       backend="reference", reverse=backward)
            slow[:, j] = (F.linear(y.transpose(1, 2)[:, position], mixer.out_proj.weight) / 2).norm(dim=-1)
    assert torch.allclose(fast, slow, rtol=1e-4, atol=1e-7)
    assert (slow[:, :position].sum() > 0) and (slow[:, position + 1:].sum() > 0)  # both directions reach it
    assert torch.allclose(mixer.token_influence(u, position, chunk=16), fast)      # chunking changes nothing


@pytest.mark.parametrize("position", [0, 24, 49])   # the first token, the class token of 49 patches, the last
def test_influence_terms_of_the_extension_equal_the_pytorch_ops(monkeypatch, position):
    from dyvm.kernels import scan_cpp

    assert scan_cpp.available()  # built here: the comparison below must not compare PyTorch with itself
    torch.manual_seed(1)
    mixer = dyvm.create_model("vim_tiny", img_size=28, patch_size=4, depth=1, embed_dim=32).layers[0].mixer.eval()
    _perturbed_decays(mixer)
    u = torch.randn(5, 50, 32)
    fast = mixer.token_influence(u, position)
    monkeypatch.setattr("dyvm.models.vim.influence_terms", lambda *args: None)
    composed = mixer.token_influence(u, position, chunk=2)
    assert torch.allclose(fast, composed, rtol=2e-5, atol=1e-7)
    assert bool((fast > 0).all())  # every token reaches the position through one direction or both


def test_class_token_influence_reads_the_class_token_of_an_odd_patch_count():
    teacher, _ = _pair()
    x = torch.randn(3, 1, 28, 28)                           # 49 patches: the class token at 24, sequence length 50
    out = teacher.forward_detailed(x, return_layers=True)
    shares = teacher.class_token_influence(out.layer_residual, [2, 4])
    assert shares.shape == (2, 3, 49)
    assert torch.allclose(shares.sum(-1), torch.ones(2, 3)) and bool((shares >= 0).all())
    u = teacher.layers[4].norm(out.layer_residual[4])
    w = teacher.layers[4].mixer.token_influence(u, 24)     # at the class token, whose own column is dropped
    assert torch.allclose(shares[1], torch.cat([w[:, :24], w[:, 25:]], 1) / w.sum(1, keepdim=True).sub(w[:, 24:25]))
    scores = teacher_keep_scores(teacher, out.layer_residual, [1, 3, 5])  # summed from each stage's layer on
    every = teacher.class_token_influence(out.layer_residual, range(1, 6))
    assert torch.allclose(scores, torch.stack([every[0:].sum(0), every[2:].sum(0), every[4:].sum(0)]), atol=1e-6)
    registers = dyvm.create_model("mambareg_small", img_size=28, patch_size=4, in_chans=1, depth=2, embed_dim=32)
    out = registers.forward_detailed(x, return_layers=True)
    with pytest.raises(ValueError, match="one class token"):
        registers.class_token_influence(out.layer_residual, [1])


@pytest.mark.parametrize("drop_tail", [True, False])
def test_stage_slots_follow_the_rearranged_patches(drop_tail):
    _, student = _pair(drop_pruned_tail=drop_tail, keep_ratio_source="probabilities")
    out = student(torch.randn(4, 1, 28, 28))
    assert len(out.stages) == 3
    order = torch.arange(49).expand(4, 49)
    for k, stage in enumerate(out.stages):
        assert torch.equal(stage.patch_ids, order)          # the patch at each slot, as the stage met them
        decision = out.decisions[k][:, :order.shape[1]]
        m = stage.live.shape[1]
        expected_live = (torch.ones(4, m) if drop_tail or k == 0 else
                         (torch.arange(m)[None] < out.decisions[k - 1][:, :m].sum(1, keepdim=True)).float())
        assert torch.equal(stage.live, expected_live)        # the kept slots of the stage before, first
        keep_p = stage.keep_logp[..., 0].exp()
        assert torch.allclose(stage.keep_logp.exp().sum(-1), torch.ones(stage.live.shape))
        assert torch.allclose(out.keep_shares[k][:, :m], keep_p * stage.live)     # p(keep) is what the loss reads
        order = order.gather(1, kept_first_order(decision))
        if drop_tail:
            order = order[:, :student.keep_counts()[k]]
    assert torch.equal(order, out.current_pos)
    # where the predictor does not choose there is no p(keep) to guide
    forced = student.forward_train(torch.randn(4, 1, 28, 28), keep_masks=[torch.ones(4, 49, dtype=torch.bool)] * 3)
    assert all(s.keep_logp is None for s in forced.stages)


def test_keep_guidance_loss_targets_the_teachers_top_live_slots():
    patch_ids = torch.tensor([[3, 1, 0, 2], [0, 1, 2, 3]])
    live = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    scores = torch.tensor([[[0.1, 0.2, 0.9, 0.8], [0.4, 0.3, 0.2, 0.1]]])         # (S=1, B=2, M=4)
    # image 0: patch 2 scores highest but its slot is not live, so the live top-2 are patches 3 and 1 (slots 0, 1);
    # image 1: patches 0 and 1 (slots 0, 1)
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    certain = torch.stack([target, 1 - target], -1).clamp(1e-6, 1).log()
    assert keep_guidance_loss([StageSlots(patch_ids, live, certain)], scores, [2]) < 1e-5
    half = torch.full((2, 4, 2), 0.5).log()
    assert torch.isclose(keep_guidance_loss([StageSlots(patch_ids, live, half)], scores, [2]), torch.log(torch.tensor(2.0)))
    wrong = torch.stack([1 - target, target], -1).clamp(1e-6, 1).log()
    # the dead slot (image 0, slot 3) adds nothing: 7 live slots, 7 wrong, each -log(1e-6)
    assert torch.isclose(keep_guidance_loss([StageSlots(patch_ids, live, wrong)], scores, [2]),
                         -torch.log(torch.tensor(1e-6)), rtol=1e-4)
    with pytest.raises(ValueError, match="p\\(keep\\)"):
        keep_guidance_loss([StageSlots(patch_ids, live, None)], scores, [2])


def test_keep_guidance_gradient_reaches_the_predictors_not_the_later_layers_or_the_head():
    teacher, student = _pair()
    criterion = DyVMLoss.for_model(student, torch.nn.CrossEntropyLoss(), teacher, keep_guidance=1.0)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    out = student(x)
    loss, parts = criterion(x, out, y)
    assert parts["keep_guidance"] > 0
    alone = keep_guidance_loss(out.stages, teacher_outputs(teacher, x, [1, 3, 5]).keep_scores, student.keep_counts())
    student.zero_grad()
    alone.backward()
    grads = {n: p.grad for n, p in student.named_parameters()}
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in grads if n.startswith("score_predictors"))
    # nothing after the last stage (before layer 5) shapes a keep decision: layer 5 (its router too), the head
    assert all(grads[n] is None or not grads[n].any() for n in grads if n.startswith(("layers.5.", "head")))
    assert any(grads[n] is not None and grads[n].any() for n in grads if n.startswith("layers.0."))
    # the teacher is never trained and its influence carries no graph
    assert all(p.grad is None for p in teacher.parameters())
    # with guidance off the loss has no such term, as before
    plain = DyVMLoss.for_model(student, torch.nn.CrossEntropyLoss(), teacher)
    assert "keep_guidance" not in plain(x, student(x), y)[1]


def test_remembered_teacher_outputs_hold_the_keep_scores():
    teacher, student = _pair()
    TeacherMemo.clear()
    x = torch.randn(4, 1, 28, 28)
    guided = TeacherMemo(teacher, 64, [1, 3, 5])
    plain = TeacherMemo(teacher, 64)
    first = guided(x)
    assert torch.equal(first.keep_scores, teacher_outputs(teacher, x, [1, 3, 5]).keep_scores)
    assert guided(x) is first and guided.hits == 1
    # a run without guidance reuses the guided run's teacher outputs (the demo's baselines after its DyVM) ...
    reused = plain(x)
    assert plain.hits == 1 and plain.misses == 0 and reused.keep_scores is None
    assert torch.equal(reused.logits, first.logits) and torch.equal(reused.tokens, first.tokens)
    # ... while guidance at other layers is computed anew, and a plain entry does not serve a guided run
    other = TeacherMemo(teacher, 64, [2])
    assert other(x).keep_scores.shape[0] == 1 and other.misses == 1
    TeacherMemo.clear()
    y = torch.randn(4, 1, 28, 28)
    assert plain(y).keep_scores is None and plain.misses == 1
    assert torch.equal(guided(y).keep_scores, teacher_outputs(teacher, y, [1, 3, 5]).keep_scores)
    assert guided.misses == 2 and guided(y).keep_scores is not None and guided.hits == 2  # it replaced the plain one
    TeacherMemo.clear()


def test_keep_guidance_options_are_one_line_errors():
    def check(model="dyvm_vim_tiny", **options):
        _check_config(TrainConfig(model=model, **options).resolved())

    check(keep_guidance=1.0)
    with pytest.raises(ValueError, match="--keep-guidance must be"):
        check(keep_guidance=-1.0)
    with pytest.raises(ValueError, match="--score predictor"):
        check(keep_guidance=1.0, score="static")
    with pytest.raises(ValueError, match="classification only"):
        check(model="dyvm_vim_seg_micro", task="segmentation", keep_guidance=1.0, distill_weight=0.0)
    teacher, student = _pair()
    with pytest.raises(ValueError, match="frozen teacher"):
        DyVMLoss.for_model(student, torch.nn.CrossEntropyLoss(), None, keep_guidance=1.0)
    for recipe in ("paper", "dyvm"):  # off unless asked
        assert TrainConfig(model="dyvm_vim_tiny", recipe=recipe).resolved().keep_guidance == 0.0
