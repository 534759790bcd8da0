"""The segmentation task: Fashion-MNIST mosaics, mIoU, the segmenters, train → checkpoint → eval,
train ≡ inference of the DyVM segmenter, bad --task values, and the demo's smoke run."""
import json

import numpy as np
import pytest
import torch

import dyvm
from dyvm.cli import main
from dyvm.evaluate import confusion_matrix, segmentation_scores
from dyvm.mosaics import BACKGROUND, FOREGROUND_THRESHOLD, FashionMNISTMosaics, garment_pool, make_mosaics


def paint_reference(garments, classes, placements, canvas):
    """The mosaic rule written out pixel by pixel (slow, independent of make_mosaics)."""
    image = np.zeros((canvas, canvas), np.uint8)
    label = np.full((canvas, canvas), BACKGROUND, np.uint8)
    g = garments.shape[-1]
    for which, top, left, placed in placements:
        if not placed:
            continue
        for r in range(g):
            for c in range(g):
                v = garments[which, r, c]
                if v >= FOREGROUND_THRESHOLD:
                    image[top + r, left + c] = v
                    label[top + r, left + c] = classes[which]
    return image, label


def test_mosaics_are_deterministic_and_label_each_pixel_with_its_garment(fashion_mnist):
    garments, classes = garment_pool("test")
    images, labels, placements = make_mosaics(garments, classes, 40, seed=5)
    again = make_mosaics(garments, classes, 40, seed=5)
    assert np.array_equal(images, again[0]) and np.array_equal(labels, again[1])
    assert not np.array_equal(images, make_mosaics(garments, classes, 40, seed=6)[0])
    counts = placements[..., 3].sum(1)
    assert counts.min() >= 2 and counts.max() <= 4 and len(set(counts.tolist())) > 1
    for i in range(6):
        ref_image, ref_label = paint_reference(garments, classes, placements[i], 56)
        assert np.array_equal(images[i], ref_image) and np.array_equal(labels[i], ref_label)
    assert {BACKGROUND} < set(np.unique(labels).tolist())
    # the split's dataset: normalised images, int64 labels, the held-out garments for val
    val = FashionMNISTMosaics("val", count=8)
    x, y = val[3]
    assert x.shape == (1, 56, 56) and x.dtype == torch.float32 and y.shape == (56, 56) and y.dtype == torch.int64
    val_garments, _ = garment_pool("val")
    train_garments, _ = garment_pool("train")
    assert len(val_garments) == 5000 and len(train_garments) == 55000
    assert torch.equal(FashionMNISTMosaics("val", count=8).labels, val.labels)


def test_miou_against_a_hand_computed_case():
    target = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])
    conf = confusion_matrix(pred, target, num_classes=4)
    assert conf.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    s = segmentation_scores(conf)
    # IoU: class 0 = 1 / (2 + 2 - 1) = 1/3; class 1 = 2 / (2 + 3 - 2) = 2/3; class 2 = 0; class 3 absent (left out)
    assert s["miou"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 0) / 3)
    assert s["pixel_acc"] == pytest.approx(100 * 3 / 5)
    assert s["per_class_iou"][3] != s["per_class_iou"][3]  # NaN


def test_segmenters_predict_per_pixel_logits_and_count_their_head():
    from dyvm.flops import count_flops

    vim, dy = dyvm.create_model("vim_seg_micro"), dyvm.create_model("dyvm_vim_seg_micro")
    assert vim.task == dy.task == "segmentation" and dyvm.create_model("vim_tiny").task == "classification"
    x = torch.randn(2, 1, 56, 56)
    with torch.no_grad():
        assert vim.eval()(x).shape == dy.eval()(x).shape == (2, 11, 56, 56)
    out = dy.train()(x)
    assert out.logits.shape == (2, 11, 56, 56) and out.aux_logits.shape == (2, 11, 14, 14)
    assert dy.keep_counts() == [137, 96, 67]
    backbone = dyvm.create_model("vim_seg_micro", num_classes=0)  # a bare backbone has no head
    assert count_flops(vim) - count_flops(backbone) == pytest.approx(vim.head.macs(
        [(56, 56), (28, 28), (14, 14), (7, 7)]) / 1e9)
    assert count_flops(dy, branch_keep_ratio=1.0) < count_flops(vim)


def test_dyvm_segmenter_training_equals_inference_on_the_pruned_tokens():
    """With Gumbel noise that reproduces the inference keep sets (and routers on), the masked training
    forward gives the logits of the physically pruned inference forward (BN and dropout in eval)."""
    torch.manual_seed(0)
    model = dyvm.create_model("dyvm_vim_seg_micro", embed_dim=32, drop_path_rate=0.0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = torch.randn(3, 1, 56, 56)
    model.eval()
    with torch.no_grad():
        inf = model.forward_inference(x)
    assert inf.gates.sum() > 0
    keeps = iter(inf.keep_indices)

    def noise(shape, device):  # Exp(1) draws: tiny → Gumbel +69 for the wanted side
        if len(shape) == 2:  # a router: Gumbel 0 both sides, the gate is logit > 0 as in eval
            return torch.ones(shape)
        keep = torch.zeros(shape[:2], dtype=torch.bool).scatter_(1, next(keeps), True)
        e = torch.ones(shape)
        e[..., 0][keep], e[..., 1][~keep] = 1e-30, 1e-30
        return e

    model.train()
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout2d)):
            m.eval()
    with torch.no_grad():
        train = model(x, noise=noise)
    assert torch.equal(train.gates, inf.gates)
    for d, k in zip(train.decisions, inf.keep_indices):
        assert torch.equal(d.nonzero()[:, 1].view(3, -1), k)
    assert (train.logits - inf.logits).abs().max() < 1e-4


def test_train_checkpoint_eval_roundtrip(fashion_mnist, tmp_path, capsys):
    common = ["--task", "segmentation", "--embed-dim", "32", "--epochs", "1", "--batch-size", "16",
              "--val-size", "16", "--no-progress", "--threads", "1"]
    assert main(["train", "--model", "vim_seg_micro", "--subset", "32", "--output", str(tmp_path / "vim")] + common) == 0
    assert main(["train", "--model", "dyvm_vim_seg_micro", "--checkpoint", str(tmp_path / "vim" / "best.pth"),
                 "--subset", "16", "--output", str(tmp_path / "dy")] + common) == 0
    ckpt = torch.load(tmp_path / "dy" / "best.pth", weights_only=False)
    assert ckpt["arch"] == "dyvm_vim_seg_micro" and ckpt["train_config"]["task"] == "segmentation"
    assert ckpt["classes"][-1] == "background" and "val_miou" in ckpt
    capsys.readouterr()
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(tmp_path / "dy" / "best.pth"), "--split", "val", "--val-size", "16",
                 "--latency-batch-sizes", "1", "--json", str(out), "--no-progress", "--threads", "1"]) == 0
    assert "mIoU" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["task"] == "segmentation" and r["images"] == 16 and 0 <= r["miou"] <= 100
    assert r["miou"] == pytest.approx(ckpt["val_miou"], abs=1e-6)  # the same model on the same mosaics
    assert len(r["token_keep"]) == 3 and r["gflops_official"] > 0
    # the run's config names the segmentation recipe: no teacher, both ratio terms 20
    config = json.loads((tmp_path / "dy" / "config.json").read_text())
    assert config["distill_weight"] == 0 and config["token_weight"] == config["block_weight"] == 20


@pytest.mark.parametrize("argv,needle", [
    (["train", "--task", "detection"], "--task 'detection'"),
    (["train", "--task", "segmentation", "--model", "vim_tiny"], "--model vim_tiny is a classification model"),
    (["train", "--model", "vim_seg_micro"], "--task classification needs"),
    (["demo", "--task", "nope"], "--task 'nope'"),
    (["demo", "--task", "segmentation", "--long"], "--long"),
])
def test_bad_task_is_a_one_line_error(argv, needle, tmp_path, capsys):
    assert main(argv + ["--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "out").exists()


def test_eval_task_mismatch(fashion_mnist, tmp_path, capsys):
    from dyvm.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "c.pth", dyvm.create_model("vim_tiny", img_size=28, patch_size=4, depth=2,
                                                          embed_dim=16, in_chans=1, num_classes=10))
    assert main(["eval", "--checkpoint", str(tmp_path / "c.pth"), "--task", "segmentation"]) == 2
    assert "is a classification model" in capsys.readouterr().err


def test_segmentation_demo_smoke(fashion_mnist, tmp_path, monkeypatch):
    from PIL import Image

    from dyvm import demo_segmentation as ds

    monkeypatch.setitem(ds.SEGMENTATION_PLANS, "quick", ds.SegmentationPlan(
        vim_epochs=1, vim_mosaics=32, dyvm_epochs=1, dyvm_mosaics=32, val_mosaics=16, test_mosaics=16,
        token_keep_ratio=0.7, block_keep_ratio=0.8, latency_batch=4, latency_rounds=2, pictures=2, smoke=True))
    out = tmp_path / "report"
    assert main(["demo", "--task", "segmentation", "--quick", "--output", str(out), "--no-progress",
                 "--threads", "1"]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["vim"]["arch"] == "vim_seg_micro" and r["dyvm"]["arch"] == "dyvm_vim_seg_micro"
    assert r["dyvm"]["gflops_official"] < r["vim"]["gflops_official"] and r["comparison"]["flops_cut_backbone"] > 0.3
    assert set(r["latency"]) == {"b1", "b4"} and r["latency"]["b1"]["dyvm_over_vim"] > 0
    text = (out / "report.md").read_text()
    assert f"{r['dyvm']['miou']:.2f}" in text and "A smoke run" in text and "UPerHead" in text
    with Image.open(out / "predictions.png") as im:
        assert im.format == "PNG" and min(im.size) > 200
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dyvm-demo-")]
