"""FLOPs: the official convention's published numbers, the full convention against torch's
FlopCounterMode (with the scan registered as a custom op), and the FLOPs-budget solver."""
import pytest
import torch

import dyvm
from dyvm.flops import count_flops, count_flops_with_torch, flops_breakdown, solve_keep_ratio


@pytest.mark.parametrize("name,gflops", [("vim_tiny", 1.449), ("vim_small", 5.077), ("vim_base", 18.868)])
def test_official_vim_numbers(name, gflops):
    assert round(count_flops(dyvm.create_model(name, depth=24)), 3) == gflops


def test_official_dyvm_small():
    model = dyvm.create_model("dyvm_vim_small")
    assert round(count_flops(model, branch_keep_ratio=0.9), 3) == 3.292
    assert round(count_flops(model, branch_keep_ratio=1.0), 3) == 3.345
    assert count_flops(model) == count_flops(model, branch_keep_ratio=0.8)  # defaults to β
    reduction = 1 - count_flops(model, branch_keep_ratio=0.9) / count_flops(dyvm.create_model("vim_small"))
    assert 0.35 < reduction < 0.355


def tiny_dyvm():
    torch.manual_seed(0)
    model = dyvm.create_model("dyvm_vim_tiny", img_size=32, patch_size=4, depth=6, embed_dim=64,
                              pruning_loc=[2, 4], num_classes=10).eval()
    with torch.no_grad():
        for layer in model.layers:  # make some branches switch off
            layer.mixer.block_head.weight.normal_(0, 0.5)
            layer.mixer.block_head.bias.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("kind", ["vim", "dyvm"])
def test_full_convention_matches_flop_counter_mode(kind):
    model = tiny_dyvm() if kind == "dyvm" else dyvm.create_model("vim_tiny", img_size=32, patch_size=4, depth=3,
                                                                   embed_dim=64, num_classes=10)
    x = torch.randn(3, 3, 32, 32)
    if kind == "dyvm":
        keep = dyvm.flops.measure_branch_keep(model, x)
        assert 0 < keep.mean() < 1  # the check covers skipped branches
    else:
        keep = 1.0
    parts = flops_breakdown(model, "full", branch_keep=keep)
    analytic = (sum(parts.values()) - parts["norms"]) / 1e9  # FlopCounterMode does not see norms
    assert count_flops_with_torch(model, x) == pytest.approx(analytic, rel=1e-9)
    if kind == "dyvm":
        assert count_flops(model, "full", images=x) == pytest.approx(sum(parts.values()) / 1e9, rel=1e-9)


def test_full_exceeds_official_and_plain_vim_ignores_ratio():
    vim = dyvm.create_model("vim_tiny")
    assert count_flops(vim, "full") > count_flops(vim)
    assert count_flops(dyvm.create_model("vim_tiny", img_size=448)) > 3.9 * count_flops(vim)
    assert count_flops(vim, img_size=448) == count_flops(dyvm.create_model("vim_tiny", img_size=448))


def test_solve_keep_ratio_meets_budget():
    model = dyvm.create_model("dyvm_vim_small")
    rho = solve_keep_ratio(model, 3.0, branch_keep_ratio=0.9)
    ratios = [rho, rho ** 2, rho ** 3]
    assert count_flops(model, branch_keep_ratio=0.9, token_ratio=ratios) <= 3.0
    bigger = [(rho + 0.01) ** k for k in (1, 2, 3)]
    assert count_flops(model, branch_keep_ratio=0.9, token_ratio=bigger) > 3.0
    assert solve_keep_ratio(model, 100.0) == 1.0
    with pytest.raises(ValueError, match="target_gflops"):
        solve_keep_ratio(model, 0.1)


def test_bad_flops_arguments():
    model = dyvm.create_model("dyvm_vim_tiny")
    with pytest.raises(ValueError, match="convention"):
        count_flops(model, "paper")
    with pytest.raises(ValueError, match="branch_keep_ratio"):
        count_flops(model, branch_keep_ratio=1.5)
    with pytest.raises(ValueError, match="img_size"):
        count_flops(model, img_size=8)
