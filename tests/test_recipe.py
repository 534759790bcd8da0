"""DyVM fine-tuning recipe plumbing: presets, recipes, keep-ratio warm-up, per-copy Gumbel noise keys."""
import pytest
import torch

import dyvm
from dyvm.cli import build_parser
from dyvm.dynamic import SampleNoise
from dyvm.engine import DYVM_PRESETS, DYVM_RECIPES, CopyKeyedRepeatAugSampler, KeepRatioWarmup, TrainConfig, _Indexed
from dyvm.losses import DyVMLoss


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_preset_batch_size_wins_unless_the_flag_is_given(size):
    args = build_parser().parse_args(["train", "--model", f"dyvm_vim_{size}"])
    assert args.batch_size is None
    names = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    assert TrainConfig(**names).resolved().batch_size == DYVM_PRESETS[size]["batch_size"]
    args = build_parser().parse_args(["train", "--model", f"dyvm_vim_{size}", "--batch-size", "16"])
    names = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    assert TrainConfig(**names).resolved().batch_size == 16


def test_recipes_paper_and_dyvm():
    paper = TrainConfig(model="dyvm_vim_small", recipe="paper").resolved()
    ours = TrainConfig(model="dyvm_vim_small").resolved()
    assert ours.recipe == "dyvm"
    for key, value in DYVM_RECIPES["paper"].items():
        assert getattr(paper, key) == value
    for key, value in DYVM_RECIPES["dyvm"].items():
        assert getattr(ours, key) == value
    # what the recipes share is the paper's preset
    assert (paper.lr, paper.token_keep_ratio, paper.block_keep_ratio) == (ours.lr, ours.token_keep_ratio,
                                                                           ours.block_keep_ratio) == (5e-5, 0.7, 0.8)
    assert TrainConfig(model="dyvm_vim_small", recipe="paper", keep_prior=True).resolved().keep_prior is True
    # the option reaches the model: the paper's recipe trains in its layout (the pruned tail kept, masked)
    from dyvm.model_options import model_overrides
    from dyvm.models import create_model
    tiny = {name: TrainConfig(model="dyvm_vim_tiny", recipe=name, token_sampler="topk").resolved()
            for name in ("paper", "dyvm")}
    assert [create_model(cfg.model, **model_overrides(cfg, dynamic=True)).drop_pruned_tail
            for cfg in tiny.values()] == [False, True]
    # small images: the dyvm recipe fine-tunes at the lr the study measured best, the paper recipe keeps its own
    assert TrainConfig(model="dyvm_vim_tiny", img_size=28).resolved().lr == 3e-3
    assert TrainConfig(model="dyvm_vim_tiny", img_size=28, recipe="paper").resolved().lr == 3e-5
    assert TrainConfig(model="dyvm_vim_tiny", img_size=28, lr=1e-4).resolved().lr == 1e-4
    # the size comes from our checkpoint when --img-size is not given (the shipped centred teacher: 28 px)
    from dyvm.demo import CENTRED_TEACHER_FILE as TEACHER_FILE

    small = TrainConfig(model="dyvm_vim_tiny", checkpoint=TEACHER_FILE).resolved()
    assert (small.lr, small.mixup, small.aa) == (3e-3, 0.0, "none")
    # ... and prunes where the study found it costs least: before the last three layers, ρ 0.3, β 0.8
    assert (small.pruning_loc, small.token_keep_ratio, small.block_keep_ratio) == ([-3, -2, -1], 0.3, 0.8)
    assert TrainConfig(model="dyvm_vim_tiny", checkpoint=TEACHER_FILE, pruning_loc=[2, 4],
                       token_keep_ratio=0.6).resolved().pruning_loc == [2, 4]
    for other in (TrainConfig(model="dyvm_vim_tiny", img_size=28, recipe="paper"),  # the paper's own placement
                  TrainConfig(model="dyvm_vim_small"),                               # large images
                  TrainConfig(model="dyvm_vim_seg_micro", task="segmentation")):    # the official seg objective
        assert other.resolved().pruning_loc is None
    with pytest.raises(ValueError, match="recipe"):
        TrainConfig(model="dyvm_vim_small", recipe="fast").resolved()
    vim = TrainConfig(model="vim_tiny").resolved()
    assert (vim.keep_prior, vim.dynamic_lr_scale, vim.ratio_warmup) == (False, 1.0, 0.0)


def test_keep_ratio_warmup_goes_from_one_to_the_targets_and_restores():
    model = dyvm.create_model("dyvm_vim_tiny", img_size=32, patch_size=8, depth=4, embed_dim=32, pruning_loc=[1, 2, 3],
                              token_keep_ratio=0.5, block_keep_ratio=0.6)
    crit = DyVMLoss.for_model(model, torch.nn.CrossEntropyLoss())
    final = list(model.token_ratio)
    warm = KeepRatioWarmup(model, crit, fraction=0.5, total_steps=20)  # 10 warm-up steps
    warm.step(0)
    assert model.token_ratio == pytest.approx([1 - 0.1 * (1 - r) for r in final])
    assert crit.token_ratio == model.token_ratio and crit.block_keep_ratio == pytest.approx(1 - 0.1 * 0.4)
    warm.step(4)
    assert model.token_ratio == pytest.approx([1 - 0.5 * (1 - r) for r in final])
    warm.step(9)
    assert model.token_ratio == pytest.approx(final) and crit.block_keep_ratio == pytest.approx(0.6)
    warm.step(15)
    assert model.token_ratio == pytest.approx(final)
    warm.step(2)
    warm.finish()
    assert model.token_ratio == pytest.approx(final) and crit.token_ratio == pytest.approx(final)
    assert crit.block_keep_ratio == 0.6 and model.config["token_ratio"] == pytest.approx(final)


class _Range(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.zeros(1), i


def _global_keys(n, world, repeats=3, epoch=0):
    """Per global step of 16 images, the sorted keys drawn by all ranks together."""
    per_rank = 16 // world
    streams = []
    for rank in range(world):
        s = CopyKeyedRepeatAugSampler(_Range(n), num_replicas=world, rank=rank, shuffle=True, num_repeats=repeats)
        s.set_epoch(epoch)
        streams.append(list(s))
    steps = len(streams[0]) // per_rank
    return [sorted(k for st in streams for k in st[i * per_rank:(i + 1) * per_rank]) for i in range(steps)]


def test_repeated_aug_copies_draw_different_noise_the_same_for_any_process_count():
    n = 600
    keys = [k for step in _global_keys(n, 1) for k in step]
    by_index = {}
    for k in keys:
        by_index.setdefault(k % n, []).append(k)
    copies = [v for v in by_index.values() if len(v) > 1]
    assert copies and all(len(set(v)) == len(v) for v in copies)  # each copy of an image has its own key
    assert _global_keys(n, 1) == _global_keys(n, 2) == _global_keys(n, 4)  # same keys per global step
    # the dataset wrapper returns the image of the key's index, and the key itself
    ds = _Indexed(_Range(n))
    assert ds[5 + 2 * n][1:] == (5, 5 + 2 * n)
    # the noise of two copies of one image differs; the noise of one key is reproducible
    ids = torch.tensor([7, 7 + n, 7 + 2 * n])
    draws = SampleNoise(ids, seed=0, epoch=0)((3, 10), torch.device("cpu"))
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    assert torch.equal(SampleNoise(ids, 0, 0)((3, 10), torch.device("cpu")), draws)


def test_bad_recipe_options_are_one_line_errors():
    with pytest.raises(ValueError, match="ratio_warmup"):
        from dyvm.engine import _check_config

        _check_config(TrainConfig(model="dyvm_vim_tiny", ratio_warmup=1.5).resolved())
    with pytest.raises(ValueError, match="block-loss-weighting"):
        from dyvm.engine import _check_config

        _check_config(TrainConfig(model="dyvm_vim_tiny", block_loss_weighting="flops").resolved())
    with pytest.raises(ValueError, match="block-loss-weighting cost"):
        _check_config(TrainConfig(model="dyvm_vim_seg_micro", task="segmentation",
                                  block_loss_weighting="cost").resolved())
    with pytest.raises(ValueError, match="repeated_aug"):
        CopyKeyedRepeatAugSampler(_Range(10), num_replicas=1, rank=0, num_repeats=2.5)


def test_cli_takes_pruning_locations_from_the_end():
    args = build_parser().parse_args(["train", "--model", "dyvm_vim_tiny", "--pruning-loc", "-3", "-2", "-1"])
    assert args.pruning_loc == [-3, -2, -1]


def test_block_loss_weighting_from_the_cli_and_the_recipes():
    args = build_parser().parse_args(["train", "--model", "dyvm_vim_tiny", "--block-loss-weighting", "cost"])
    assert args.block_loss_weighting == "cost"
    assert TrainConfig(model="dyvm_vim_tiny", block_loss_weighting=args.block_loss_weighting).resolved() \
        .block_loss_weighting == "cost"
    # both recipes count every layer alike unless asked (the paper's loss)
    for recipe in ("paper", "dyvm"):
        assert TrainConfig(model="dyvm_vim_tiny", recipe=recipe).resolved().block_loss_weighting == "layers"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--model", "dyvm_vim_tiny", "--block-loss-weighting", "tokens"])


@pytest.mark.parametrize("argv, named", [
    (["--keep-prior", "--token-keep-ratio", "0.7"], "--token-keep-ratio, --keep-prior"),
    (["--block-loss-weighting", "cost"], "--block-loss-weighting"),
    (["--distill-weight", "1", "--teacher", "t.pth"], "--distill-weight, --teacher"),
    (["--no-routers"], "--no-routers"),
])
def test_dyvm_options_on_a_plain_vim_are_a_one_line_error(tmp_path, capsys, argv, named):
    from dyvm.cli import main

    out = tmp_path / "run"
    code = main(["train", "--model", "vim_tiny", "--epochs", "1", "--output", str(out), "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"dyvm train: error: {named}: DyVM options") and "--model dyvm_vim_tiny" in err[0]
    assert not out.exists()
    # the same options on the DyVM are accepted, and a plain Vim's own config resolves as before
    TrainConfig(model="dyvm_vim_tiny", keep_prior=True, token_keep_ratio=0.7, block_loss_weighting="cost").resolved()
    assert TrainConfig(model="vim_tiny").resolved().keep_prior is False
