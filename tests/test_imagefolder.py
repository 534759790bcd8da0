"""A user's own ImageFolder as it comes (any mode, size, format, a corrupt file), the layouts and
their errors, the defaults that follow the data, and ``dyvm predict``. No dataset needed."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import dyvm
from dyvm.checkpoint import read_checkpoint
from dyvm.cli import main as cli_main
from dyvm.data import build_dataset, default_val_size, split_per_class, to_model_mode
from dyvm.engine import TrainConfig

MODES = ["L", "RGB", "RGBA", "LA", "P", "PT", "CMYK", "I;16", "1"]  # PT: palette with a transparent colour


def _picture(mode: str, size: tuple[int, int], label: int, seed: int) -> Image.Image:
    """A class-dependent picture (a bright bar whose position is the class) in ``mode``."""
    rng = np.random.default_rng(seed)
    w, h = size
    arr = (rng.random((h, w, 3)) * 60).astype(np.uint8)
    x0 = int(w * (0.1 + 0.3 * label))
    arr[:, x0:x0 + max(1, w // 5)] = 230
    img = Image.fromarray(arr, "RGB")
    if mode == "PT":
        img = img.convert("P", palette=Image.ADAPTIVE, colors=16)
        img.info["transparency"] = 0
        return img
    if mode == "I;16":
        return Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257)
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray((rng.random((h, w)) * 255).astype(np.uint8)))
        return img
    return img.convert(mode)


def make_mixed_folder(root, classes=("bar_left", "bar_mid", "bar_right"), per_class=9, splits=("train", "val"),
                      corrupt=True):
    """Class folders of PNG and JPEG files in every mode PIL writes, 9 to 70 px, non-square."""
    sizes = [(28, 28), (9, 13), (70, 40), (33, 64), (16, 16), (45, 45)]
    n = 0
    for split in splits:
        for label, name in enumerate(classes):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                mode = MODES[(i + label) % len(MODES)]
                img = _picture(mode, sizes[(i + 2 * label) % len(sizes)], label, n)
                jpeg = mode == "CMYK" or (mode in ("L", "RGB") and i % 2 == 0)
                ext = ".JPEG" if jpeg else ".png"
                img.save(folder / f"img{i}{ext}")
                n += 1
    if corrupt:
        first = root / splits[0] / classes[0] if splits[0] else root / classes[0]
        (first / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    return root


TINY = dict(img_size=16, patch_size=8, depth=2, embed_dim=16, batch_size=8, eval_batch_size=64, epochs=1,
            no_progress=True, threads=1, lr=1e-3)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_becomes_the_model_mode(mode, channels):
    img = to_model_mode(_picture(mode, (10, 7), 1, 0), channels)
    assert img.mode == ("RGB" if channels == 3 else "L") and img.size == (10, 7)
    arr = np.asarray(img, dtype=float)
    assert arr.max() > 150  # the bright bar survived (16-bit scaled down, palette/CMYK/alpha converted)


@pytest.mark.parametrize("in_chans", [1, 3])
def test_train_and_eval_on_a_folder_as_it_comes(tmp_path, in_chans):
    root = make_mixed_folder(tmp_path / "data")
    with pytest.warns(RuntimeWarning, match="broken.png"):
        summary = dyvm.train(model="vim_tiny", dataset="imagefolder", data_path=str(root), in_chans=in_chans,
                             output=str(tmp_path / "run"), **TINY)
    assert summary["history"][0]["skipped_images"] == 1
    ckpt = read_checkpoint(tmp_path / "run" / "best.pth")
    assert ckpt["classes"] == ["bar_left", "bar_mid", "bar_right"]
    report = dyvm.evaluate_checkpoint(str(tmp_path / "run" / "best.pth"), dataset="imagefolder", data_path=str(root),
                                      progress=False, latency_batch_sizes=())
    assert report["images"] == 27 and report["classes"] == ckpt["classes"]
    assert set(report["per_class_top1"]) == set(ckpt["classes"])


def _cli(capsys, *args):
    code = cli_main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, (err[-1] if err else "")


def test_folder_layout_errors_are_one_line(tmp_path, capsys):
    base = ["train", "--dataset", "imagefolder", "--img-size", "16", "--patch-size", "8", "--depth", "1",
            "--embed-dim", "16", "--epochs", "1", "--output", tmp_path / "out", "--no-progress"]
    # train/ and val/ with different classes
    root = make_mixed_folder(tmp_path / "diff", per_class=2, corrupt=False)
    (root / "val" / "bar_mid").rename(root / "val" / "bar_centre")
    code, last = _cli(capsys, *base, "--data-path", root)
    assert code == 2 and "same class folders" in last and "bar_centre" in last and "bar_mid" in last
    assert str(root / "train") in last and str(root / "val") in last
    # a single class
    one = make_mixed_folder(tmp_path / "one", classes=("only",), per_class=3, corrupt=False)
    code, last = _cli(capsys, *base, "--data-path", one)
    assert code == 2 and "only one class folder" in last and str(one / "train") in last
    # an empty class
    empty = make_mixed_folder(tmp_path / "empty", per_class=2, corrupt=False)
    (empty / "train" / "nothing_here").mkdir()
    code, last = _cli(capsys, *base, "--data-path", empty)
    assert code == 2 and "without images: nothing_here" in last and str(empty / "train") in last
    # no class folders at all / no such folder
    (tmp_path / "flat").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "flat" / "a.png")
    code, last = _cli(capsys, *base, "--data-path", tmp_path / "flat")
    assert code == 2 and "no class folders" in last
    code, last = _cli(capsys, *base, "--data-path", tmp_path / "missing")
    assert code == 2 and "--data-path" in last and "no such directory" in last
    assert not (tmp_path / "out").exists()  # nothing written for a run that could not start


def test_single_tree_is_split_deterministically(tmp_path):
    root = make_mixed_folder(tmp_path / "tree", splits=("",), per_class=10, corrupt=False)
    test = build_dataset("imagefolder", "test", None, str(root), val_fraction=0.2)
    train = build_dataset("imagefolder", "train", None, str(root), val_fraction=0.2, val_size=3)
    val = build_dataset("imagefolder", "val", None, str(root), val_fraction=0.2, val_size=3)
    assert len(test) == 6 and len(train) == 21 and len(val) == 3  # 2 of 10 per class, then 3 held out
    assert len({*test.indices, *train.indices, *val.indices}) == 30
    assert [test.dataset.targets[i] for i in test.indices].count(0) == 2  # per class
    again = build_dataset("imagefolder", "test", None, str(root), val_fraction=0.2)
    assert again.indices == test.indices and test.classes == ["bar_left", "bar_mid", "bar_right"]
    rest, held = split_per_class([0] * 5 + [1] * 5 + [2], 0.4, seed=0)
    assert len(held) == 4 and sorted(rest + held) == list(range(11)) and 10 in rest  # 2 + 2 + 0 (a lone image)
    with pytest.raises(ValueError, match="--val-fraction"):
        split_per_class([0, 1], 1.5)


def test_defaults_follow_the_data():
    assert default_val_size(60000) == 5000 and default_val_size(8000) == 800 and default_val_size(7) == 1
    small = TrainConfig(model="vim_tiny", img_size=28, epochs=8).resolved()
    assert (small.mixup, small.cutmix, small.aa, small.reprob, small.repeated_aug) == (0.0, 0.0, "none", 0.0, 1)
    assert (small.scale_min, small.hflip, small.warmup_epochs) == (0.8, 0.0, 1)
    assert small.batch_size == 32 and small.lr * 32 / 512 == pytest.approx(2e-3)  # effective lr 2e-3
    assert TrainConfig(model="vim_tiny", img_size=28, batch_size=128).resolved().lr * 128 / 512 == pytest.approx(2e-3)
    assert TrainConfig(model="vim_tiny", img_size=28, epochs=2).resolved().warmup_epochs == 0
    big = TrainConfig(model="dyvm_vim_small", epochs=2).resolved()
    assert big.warmup_epochs == 0 and big.mixup == 0.8 and big.hflip == 0.5 and big.scale_min == 0.08
    assert TrainConfig(model="vim_small", epochs=300).resolved().warmup_epochs == 5
    assert TrainConfig(model="vim_tiny", img_size=28, hflip=0.5, warmup_epochs=3, epochs=8).resolved().hflip == 0.5


def test_smaller_things_are_one_line_errors(tmp_path, capsys):
    root = make_mixed_folder(tmp_path / "d", per_class=4, corrupt=False)
    base = ["train", "--dataset", "imagefolder", "--data-path", root, "--img-size", "16", "--patch-size", "8",
            "--embed-dim", "16", "--no-progress", "--epochs", "1"]
    (tmp_path / "afile").write_text("keep me")
    code, last = _cli(capsys, *base, "--depth", "1", "--output", tmp_path / "afile")
    assert code == 2 and "--output" in last and "not a directory" in last
    assert (tmp_path / "afile").read_text() == "keep me"
    code, last = _cli(capsys, *base, "--model", "dyvm_vim_tiny", "--depth", "1", "--output", tmp_path / "o1",
                      "--distill-weight", "0")
    assert code == 2 and "--depth 1" in last and "pruning_loc" not in last
    code, last = _cli(capsys, *base, "--depth", "1", "--warmup-epochs", "3", "--output", tmp_path / "o2")
    assert code == 2 and "--warmup-epochs 3" in last
    code, last = _cli(capsys, *base, "--depth", "1", "--val-size", "500", "--output", tmp_path / "o3")
    assert code == 2 and "--val-size 500" in last
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoint.pth").write_bytes(b"an earlier run")
    code, last = _cli(capsys, *base, "--depth", "1", "--output", tmp_path / "old")
    assert code == 2 and "--resume" in last and (tmp_path / "old" / "checkpoint.pth").read_bytes() == b"an earlier run"


def test_dyvm_depth_below_4_gets_valid_pruning_locations(tmp_path, capsys):
    root = make_mixed_folder(tmp_path / "d", per_class=4, corrupt=False)
    code = cli_main(["train", "--model", "dyvm_vim_tiny", "--dataset", "imagefolder", "--data-path", str(root),
                     "--img-size", "16", "--patch-size", "8", "--depth", "3", "--embed-dim", "16", "--epochs", "1",
                     "--batch-size", "8", "--distill-weight", "0", "--output", str(tmp_path / "run"), "--no-progress",
                     "--in-chans", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "epoch 1/1" in err  # --no-progress still reports each epoch
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoint.pth")
    assert ckpt["config"]["pruning_loc"] == [1, 2]


def test_torch_floor_is_declared_and_checked():
    import tomllib

    from dyvm import TORCH_FLOOR, _check_torch

    deps = tomllib.load(open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), "rb"))["project"]
    assert f"torch>={TORCH_FLOOR[0]}.{TORCH_FLOOR[1]}" in deps["dependencies"]
    _check_torch(torch.__version__)
    _check_torch("2.5.0+cpu")
    with pytest.raises(ImportError, match="needs PyTorch >= 2.5, found torch 2.4.1"):
        _check_torch("2.4.1")
    with pytest.raises(ImportError, match="not installed"):
        _check_torch(None)


# ----------------------------------------------------------------------------- predict
@pytest.fixture(scope="module")
def dyvm_checkpoint(tmp_path_factory):
    from dyvm.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = dyvm.create_model("dyvm_vim_tiny", img_size=16, patch_size=4, depth=4, embed_dim=16, num_classes=3,
                              in_chans=3, pruning_loc=[1, 2], token_keep_ratio=0.5)
    path = tmp_path_factory.mktemp("ckpt") / "dyvm.pth"
    save_checkpoint(path, model, classes=["cat", "dog", "eel"])
    return path


def test_predict_folder_and_files(tmp_path, dyvm_checkpoint):
    root = make_mixed_folder(tmp_path / "imgs", per_class=3, splits=("",), corrupt=True)
    single = sorted((root / "bar_mid").iterdir())[0]
    results = dyvm.predict([root, single], str(dyvm_checkpoint), top_k=2, batch_size=4)
    assert len(results) == 3 * 3 + 1 + 1
    bad = [r for r in results if "error" in r]
    assert len(bad) == 1 and bad[0]["path"].endswith("broken.png")
    for r in results:
        if "error" in r:
            continue
        assert [t["class"] for t in r["top"]][0] in ("cat", "dog", "eel") and len(r["top"]) == 2
        assert r["top"][0]["prob"] >= r["top"][1]["prob"] and sum(t["prob"] for t in r["top"]) <= 1 + 1e-6
        assert r["token_keep"] == 4 / 16 and r["token_keep_per_stage"] == [8 / 16, 4 / 16]
        assert 0 <= r["branch_keep"] <= 1
    assert results[-1]["path"] == str(single)
    same = dyvm.predict(single, str(dyvm_checkpoint), top_k=2)
    # batched or alone, the same answer (probabilities to fp32 rounding: matmuls may sum in a
    # batch-size-dependent order, as oneDNN does on AVX2 cores)
    assert [t["class"] for t in same[0]["top"]] == [t["class"] for t in results[-1]["top"]]
    assert same[0]["top"][0]["prob"] == pytest.approx(results[-1]["top"][0]["prob"], abs=1e-6)


def test_predict_cli_json_and_errors(tmp_path, dyvm_checkpoint, capsys):
    Image.new("RGBA", (30, 20), (200, 10, 10, 128)).save(tmp_path / "a.png")
    code = cli_main(["predict", str(tmp_path / "a.png"), "--checkpoint", str(dyvm_checkpoint), "--json",
                     "--top-k", "9"])
    out = capsys.readouterr().out
    assert code == 0
    r = json.loads(out)
    assert len(r) == 1 and len(r[0]["top"]) == 3 and abs(sum(t["prob"] for t in r[0]["top"]) - 1) < 1e-5
    code = cli_main(["predict", str(tmp_path / "a.png"), "--checkpoint", str(dyvm_checkpoint)])
    text = capsys.readouterr().out
    assert code == 0 and "a.png:" in text and "tokens kept 25%" in text
    code, last = _cli(capsys, "predict", tmp_path / "nope.png", "--checkpoint", dyvm_checkpoint)
    assert code == 2 and "nope.png" in last
    code, last = _cli(capsys, "predict", tmp_path / "a.png", "--checkpoint", dyvm_checkpoint, "--top-k", "0")
    assert code == 2 and "--top-k" in last


def test_viz_title_names_the_class(tmp_path, dyvm_checkpoint, monkeypatch):
    import dyvm.viz as viz

    seen = {}
    monkeypatch.setattr(viz, "pruning_overlay", lambda model, x, pic, out, titles: seen.update(titles=titles))
    Image.new("L", (20, 20), 128).save(tmp_path / "g.png")
    viz.visualize_pruning(str(tmp_path / "g.png"), str(dyvm_checkpoint), str(tmp_path / "o.png"))
    assert seen["titles"][0].split(": ")[1].split(" (")[0] in ("cat", "dog", "eel")


def test_demo_without_data_names_the_fix(tmp_path, monkeypatch, capsys):
    import dyvm.data

    monkeypatch.setattr(dyvm.data, "FASHION_MNIST_DIRS", (str(tmp_path / "none"),))
    code, last = _cli(capsys, "demo", "--output", tmp_path / "report")
    assert code == 2 and "apt-get install -y dataset-fashion-mnist" in last and "--download" in last
    assert not (tmp_path / "report").exists()


def test_predict_with_a_vim_checkpoint_without_names(tmp_path):
    from dyvm.checkpoint import save_checkpoint

    model = dyvm.create_model("vim_tiny", img_size=16, patch_size=8, depth=1, embed_dim=16, num_classes=2, in_chans=1)
    save_checkpoint(tmp_path / "vim.pth", model)  # no class names inside: they are shown as indices
    torch.save({"model": model.state_dict()}, tmp_path / "bare.pth")  # official-style: no architecture either
    Image.new("RGB", (40, 12), (0, 90, 200)).save(tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="--model"):
        dyvm.predict(tmp_path / "x.jpg", str(tmp_path / "bare.pth"))
    r = dyvm.predict(tmp_path / "x.jpg", str(tmp_path / "vim.pth"), top_k=5)
    assert sorted(t["class"] for t in r[0]["top"]) == ["0", "1"] and "token_keep" not in r[0]
