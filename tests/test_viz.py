"""`dyvm viz` for the DyVM variants: MambaReg (registers) and VideoMamba (head class token); the
token-sequence row puts the prefix tokens where the model has them after each pruning stage."""
import pytest
import torch
from PIL import Image

import dyvm
from dyvm.checkpoint import save_checkpoint
from dyvm.cli import main
from dyvm.viz import sequence_layouts

VARIANTS = {
    "dyvm_mambareg_small": dict(embed_dim=32, num_cls_tokens=4, cls_reduce=2),
    "dyvm_videomamba_tiny": dict(embed_dim=32),
}


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_viz_draws_pruning_and_prefix_tokens_of_a_variant(arch, tmp_path, capsys):
    torch.manual_seed(0)
    model = dyvm.create_model(arch, img_size=64, patch_size=16, depth=4, pruning_loc=[1, 2, 3], num_classes=3,
                              in_chans=1, **VARIANTS[arch])
    ckpt = tmp_path / "model.pth"
    save_checkpoint(ckpt, model, classes=["a", "b", "c"])
    picture = tmp_path / "picture.png"
    Image.fromarray((torch.rand(64, 64) * 255).byte().numpy()).save(picture)
    out = tmp_path / "viz.png"
    assert main(["viz", str(picture), "--checkpoint", str(ckpt), "--output", str(out), "--threads", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[1] > 200

    layouts = sequence_layouts(model, torch.randn(1, 1, 64, 64))
    counts = [16] + model.keep_counts()
    assert [n for n, _ in layouts] == [c + model.num_prefix_tokens for c in counts]
    expected = [model.layout.positions(torch.tensor([c]))[0].tolist() for c in counts]
    assert [pos for _, pos in layouts] == expected
    if arch.startswith("dyvm_videomamba"):
        assert all(pos == [0] for _, pos in layouts)           # the class token stays first
    else:
        assert layouts[0][1] == [3, 7, 11, 15] and len(set(map(tuple, (p for _, p in layouts)))) > 1  # re-spread


def test_viz_of_a_segmenter_and_predict_refuses_one(tmp_path, capsys):
    model = dyvm.create_model("dyvm_vim_seg_micro", embed_dim=32)
    ckpt = tmp_path / "seg.pth"
    save_checkpoint(ckpt, model)
    picture = tmp_path / "picture.png"
    Image.fromarray((torch.rand(56, 56) * 255).byte().numpy()).save(picture)
    assert main(["viz", str(picture), "--checkpoint", str(ckpt), "--output", str(tmp_path / "v.png")]) == 0
    assert (tmp_path / "v.png").stat().st_size > 1000
    assert main(["predict", str(picture), "--checkpoint", str(ckpt)]) == 2
    assert "a segmentation model; dyvm predict classifies images" in capsys.readouterr().err
