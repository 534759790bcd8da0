"""The pipeline: CLI, data on the real Fashion-MNIST files, training, resume, DDP, bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dyvm
from dyvm.checkpoint import read_checkpoint
from dyvm.data import FASHION_MNIST_DIRS, build_dataset, build_transform, read_idx

FMNIST = FASHION_MNIST_DIRS[0]  # tests that read it take the `fashion_mnist` fixture: they fail without it

TINY = ["--img-size", "28", "--patch-size", "7", "--depth", "2", "--embed-dim", "32", "--batch-size", "32",
        "--subset", "256", "--val-size", "500", "--eval-batch-size", "500", "--mixup", "0", "--cutmix", "0",
        "--aa", "none", "--reprob", "0", "--repeated-aug", "1", "--no-progress", "--threads", "1"]


def run_cli(*args, env=None, timeout=600, check=True):
    proc = subprocess.run([sys.executable, "-m", "dyvm", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"dyvm {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def same_state(a, b, atol=0.0):
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=atol) for k in a)


# ----------------------------------------------------------------------------- CLI
def test_cli_help_version_and_subcommands():
    out = run_cli("--version").stdout
    assert out.strip() == f"dyvm {dyvm.__version__}"
    top = run_cli("--help").stdout
    for sub in ("train", "eval", "predict", "flops", "bench", "convert", "export", "demo", "viz"):
        assert sub in top
        assert "--config" in run_cli(sub, "--help").stdout
    start = time.perf_counter()
    run_cli("train", "--help")
    assert time.perf_counter() - start < 5  # no torch import for --help
    assert "torch" not in subprocess.run([sys.executable, "-c", "import sys, dyvm.cli; dyvm.cli.build_parser();"
                                          "print(sorted(m for m in sys.modules if m.startswith('torch')))"],
                                         capture_output=True, text=True).stdout.replace("[]", "")


def test_yaml_config_keys_equal_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: dyvm_vim_small\nconvention: official\nbranch-keep-ratio: 0.9\n")
    assert "3.292" in run_cli("flops", "--config", cfg).stdout
    assert "3.345" in run_cli("flops", "--config", cfg, "--branch-keep-ratio", "1.0").stdout  # flags win
    cfg.write_text("model: vim_tiny\nbatchsize: 3\n")
    proc = run_cli("flops", "--config", cfg, check=False)
    assert proc.returncode == 2 and "unknown key 'batchsize'" in proc.stderr


def test_convert_roundtrip(tmp_path):
    model = dyvm.create_model("vim_tiny", depth=2, img_size=32, patch_size=8)
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "a.pth")
    run_cli("convert", tmp_path / "a.pth", tmp_path / "a.safetensors")
    run_cli("convert", tmp_path / "a.safetensors", tmp_path / "b.pth")
    assert same_state(model.state_dict(), read_checkpoint(tmp_path / "b.pth")["model"])


# ----------------------------------------------------------------------------- data
def test_fashion_mnist_from_idx_files(fashion_mnist):
    images = read_idx(Path(FMNIST) / "train-images-idx3-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    train = build_dataset("fashion-mnist", "train", None, val_size=5000)
    val = build_dataset("fashion-mnist", "val", None, val_size=5000)
    test = build_dataset("fashion-mnist", "test", None)
    assert (len(train), len(val), len(test)) == (55000, 5000, 10000)
    assert set(train.indices).isdisjoint(val.indices) and val.indices[0] == 55000
    model = dyvm.create_model("vim_tiny", img_size=32, patch_size=8, depth=1)  # 3 channels, 32 px
    tf = build_transform(dyvm.data.data_config_for(model), False)
    x, y = build_dataset("fashion-mnist", "test", tf, channels=3)[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 10
    assert torch.allclose(x[0] * 0.229 + 0.485, x[1] * 0.224 + 0.456, atol=1e-5)  # grey replicated
    with pytest.raises(FileNotFoundError, match="--data-path /nonexistent"):
        build_dataset("fashion-mnist", "train", None, data_path="/nonexistent")


def test_fashion_mnist_on_a_canvas(fashion_mnist):
    plain = dyvm.data.FashionMNIST(None, "test")
    moved = dyvm.data.FashionMNIST(None, "test", canvas=40)
    assert moved.images.shape == (10000, 40, 40) and moved.offsets.shape == (10000, 2)
    assert moved.offsets.min() == 0 and moved.offsets.max() == 12  # every offset in 0..40-28 is drawn
    for i in (0, 1, 9999):
        (y, x), image = moved.offsets[i], moved.images[i].copy()
        assert np.array_equal(image[y:y + 28, x:x + 28], plain.images[i])
        image[y:y + 28, x:x + 28] = 0
        assert not image.any()  # black around the garment
    assert np.array_equal(moved.offsets, dyvm.data.FashionMNIST(None, "test", canvas=40).offsets)  # fixed per split
    train = build_dataset("fashion-mnist", "train", None, val_size=5000, canvas=40)
    assert train[0][0].size == (40, 40) and not np.array_equal(train.dataset.offsets[:100], moved.offsets[:100])
    for bad in (20, 40.5, True):
        with pytest.raises(ValueError, match="--canvas"):
            build_dataset("fashion-mnist", "test", None, canvas=bad)
    with pytest.raises(ValueError, match="--canvas 40: applies to --dataset fashion-mnist only"):
        build_dataset("imagefolder", "test", None, data_path="/nonexistent", canvas=40)


def test_to_tensor_and_normalize_fused_with_identical_values(fashion_mnist):
    """build_transform runs ToTensor + Normalize as one ToNormalizedTensor whose values equal the two torchvision
    steps' bit for bit: every byte value in L and RGB, real Fashion-MNIST images through the training transform (same
    seeds) and the eval transform; tensors and other image modes go through the two steps."""
    import random

    from timm.data import create_transform
    from torchvision import transforms as T

    from dyvm.data import ToNormalizedTensor

    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for mode, array, mean, std in (("L", values, (0.2860,), (0.3530,)),
                                   ("RGB", np.stack([values, values.T, values[::-1]], -1), (0.485, 0.456, 0.406),
                                    (0.229, 0.224, 0.225))):
        pic = Image.fromarray(array, mode)
        fused = ToNormalizedTensor(T.ToTensor(), T.Normalize(mean, std))
        assert torch.equal(fused(pic), T.Normalize(mean, std)(T.ToTensor()(pic)))
    floats = Image.fromarray(values.astype(np.float32) / 7, "F")  # another mode: the two steps themselves
    fused = ToNormalizedTensor(T.ToTensor(), T.Normalize((0.5,), (0.25,)))
    assert torch.equal(fused(floats), T.Normalize((0.5,), (0.25,))(T.ToTensor()(floats)))

    cfg = dict(input_size=(1, 28, 28), interpolation="bicubic", mean=(0.2860,), std=(0.3530,), crop_pct=0.875)
    images = build_dataset("fashion-mnist", "train", None, channels=1, val_size=5000)
    for is_training in (True, False):
        ours = build_transform(cfg, is_training, aa="none", scale=(0.8, 1.0), hflip=0.5)
        kwargs = (dict(is_training=True, scale=(0.8, 1.0), hflip=0.5, auto_augment=None, re_prob=0.0, color_jitter=None)
                  if is_training else dict(is_training=False, crop_pct=cfg["crop_pct"]))
        timms = create_transform(input_size=cfg["input_size"], interpolation="bicubic", mean=cfg["mean"],
                                 std=cfg["std"], **kwargs)
        assert any(isinstance(t, ToNormalizedTensor) for t in ours.transforms)
        assert not any(isinstance(t, ToNormalizedTensor) for t in timms.transforms)
        for i in range(64):
            outs = []
            for tf in (ours, timms):
                random.seed(i)
                torch.manual_seed(i)
                outs.append(tf(images[i][0]))
            assert outs[0].shape == (1, 28, 28) and torch.equal(outs[0], outs[1])


def make_image_folder(root: Path, per_class=6, corrupt=True):
    images = read_idx(Path(FMNIST) / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(Path(FMNIST) / "t10k-labels-idx1-ubyte.gz")
    for split in ("train", "val"):
        for c in range(3):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i, idx in enumerate(np.nonzero(labels == c)[0][:per_class]):
                Image.fromarray(images[idx]).save(folder / f"{i}.png")
    if corrupt:
        (root / "train" / "class0" / "broken.png").write_bytes(b"not a png at all")
    return root


def test_image_folder_skip_or_fail_on_corrupt_files(tmp_path, fashion_mnist):
    root = make_image_folder(tmp_path / "data")
    ds = build_dataset("imagefolder", "train", None, str(root), channels=3, val_size=2)
    with pytest.warns(RuntimeWarning, match="broken.png"):
        items = [ds[i] for i in range(len(ds))]
    assert sum(item is None for item in items) == 1
    ds = build_dataset("imagefolder", "train", None, str(root), channels=3, val_size=2, on_corrupt="fail")
    with pytest.raises(ValueError, match="broken.png"):
        [ds[i] for i in range(len(ds))]
    proc = run_cli("train", "--model", "vim_tiny", "--dataset", "imagefolder", "--data-path", root, *TINY,
                   "--batch-size", "4", "--val-size", "2", "--epochs", "1", "--in-chans", "3",
                   "--output", tmp_path / "run", "--corrupt", "fail", check=False)
    assert proc.returncode != 0 and "broken.png" in proc.stderr.splitlines()[-1]
    run_cli("train", "--model", "vim_tiny", "--dataset", "imagefolder", "--data-path", root, *TINY,
            "--batch-size", "4", "--val-size", "2", "--epochs", "1", "--in-chans", "3", "--output", tmp_path / "run2")
    log = [json.loads(line) for line in open(tmp_path / "run2" / "log.jsonl")]
    assert log[0]["skipped_images"] == 1


# ----------------------------------------------------------------------------- training
def test_training_optimiser_is_fused_adamw_with_the_loops_update():
    """``dyvm train``'s AdamW is torch's fused kernel on CPU parameters (their update equals the per-tensor loop's
    up to float rounding, groups and weight decay kept) and the loop where fusing does not apply (meta tensors)."""
    from dyvm.engine import make_optimizer, param_groups

    torch.manual_seed(0)
    model = dyvm.create_model("vim_tiny", img_size=16, patch_size=4, depth=2, embed_dim=16, num_classes=3)
    twin = dyvm.create_model("vim_tiny", img_size=16, patch_size=4, depth=2, embed_dim=16, num_classes=3)
    twin.load_state_dict(model.state_dict())
    fused = make_optimizer(param_groups(model, 0.05), 1e-2, 0.05)
    loop = torch.optim.AdamW(param_groups(twin, 0.05), lr=1e-2, weight_decay=0.05, foreach=False)
    assert fused.defaults.get("fused") and [g["weight_decay"] for g in fused.param_groups] == [0.0, 0.05]
    for _ in range(3):
        for net, opt in ((model, fused), (twin, loop)):
            opt.zero_grad()
            net(torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))).square().sum().backward()
            opt.step()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert not make_optimizer([torch.nn.Parameter(torch.zeros(3, device="meta"))], 1e-3, 0.0).defaults.get("fused")


_DENORMALS = torch.full((1 << 20,), 2.0 ** -140)  # made at import, before anything flushes


def _denormal_products_kept() -> int:
    """How many of 2^20 products of a denormal (2^-140) by 1 stay non-zero, computed by every intra-op thread."""
    return int((_DENORMALS * 1.0 != 0).sum())


def test_training_steps_flush_denormals_on_every_thread(tmp_path, monkeypatch, fashion_mnist):
    """Training steps run with denormals flushed to zero on the calling thread and on every intra-op thread (an
    x86 core takes a microcode assist per denormal operand; DyVM's straight-through gradients make many), and the
    setting is restored when the run ends; ``torch.set_flush_denormal`` alone reaches the calling thread only."""
    from dyvm.kernels import scan_cpp
    import dyvm.engine as engine

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        n = _DENORMALS.numel()
        assert _denormal_products_kept() == n
        torch.set_flush_denormal(True)
        main_only = _denormal_products_kept()
        torch.set_flush_denormal(False)
        assert scan_cpp.set_flush_denormal(True) is False
        assert _denormal_products_kept() == 0 and scan_cpp.set_flush_denormal(False) is True
        assert _denormal_products_kept() == n and (os.cpu_count() < 2 or 0 < main_only < n)

        seen, real = [], engine.train_one_epoch

        def probed(*args, **kwargs):
            seen.append(_denormal_products_kept())
            return real(*args, **kwargs)

        monkeypatch.setattr(engine, "train_one_epoch", probed)
        dyvm.train(output=str(tmp_path / "run"), model="vim_tiny", img_size=28, patch_size=7, depth=2, embed_dim=32,
                   batch_size=32, subset=64, val_size=500, eval_batch_size=500, mixup=0.0, cutmix=0.0, aa="none",
                   reprob=0.0, repeated_aug=1, no_progress=True, epochs=1, threads=2)
        assert seen == [0] and _denormal_products_kept() == n
    finally:
        scan_cpp.set_flush_denormal(False)
        torch.set_num_threads(threads)


def test_train_resume_equals_uninterrupted(tmp_path, monkeypatch, fashion_mnist):
    common = dict(model="vim_tiny", img_size=28, patch_size=7, depth=2, embed_dim=32, batch_size=32, subset=512,
                  val_size=500, eval_batch_size=500, mixup=0.0, cutmix=0.0, aa="none", reprob=0.0, repeated_aug=1,
                  no_progress=True, epochs=2, lr=2e-2, warmup_epochs=1, drop_path=0.1)
    full = dyvm.train(output=str(tmp_path / "full"), **common)
    first = read_checkpoint(tmp_path / "full" / "checkpoint.pth")
    assert first["epoch"] == 1 and first["format_version"] == 1 and first["dyvm_version"] == dyvm.__version__
    assert [r["epoch"] for r in full["history"]] == [0, 1] and full["history"][1]["val_top1"] > 20  # it learns
    assert (tmp_path / "full" / "best.pth").is_file() and (tmp_path / "full" / "log.jsonl").is_file()

    import dyvm.evaluate as ev

    real, calls = ev.evaluate, []

    def interrupted(*args, **kwargs):  # Ctrl-C at the end of epoch 1's training, before its checkpoint
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dyvm.train(output=str(tmp_path / "part"), **common)
    monkeypatch.setattr(ev, "evaluate", real)
    left = read_checkpoint(tmp_path / "part" / "checkpoint.pth")
    assert left["epoch"] == 0  # the last good checkpoint survived the interruption
    dyvm.train(output=str(tmp_path / "part"), resume=True, **common)
    resumed = read_checkpoint(tmp_path / "part" / "checkpoint.pth")
    assert resumed["epoch"] == 1
    assert same_state(resumed["model"], first["model"])  # bit-identical to the uninterrupted run
    # and so is its validation: the uninterrupted run evaluates epoch 2 in the process that evaluated epoch 1 and
    # then took fused AdamW steps, which leave the version counters alone (it read stale derived weights until the
    # mixers forgot them on train() / eval()); the resumed one derives them afresh
    assert resumed["history"][1]["val_loss"] == first["history"][1]["val_loss"]


def test_kill_leaves_last_checkpoint_loadable(tmp_path, fashion_mnist):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "dyvm", "train", "--model", "vim_tiny", *TINY, "--subset", "2048",
            "--epochs", "50", "--output", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (out / "checkpoint.pth").exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # now in the middle of a later epoch (or of writing its checkpoint)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    model, ckpt = dyvm.checkpoint.model_from_checkpoint(out / "checkpoint.pth")
    assert ckpt["epoch"] >= 0 and isinstance(model, dyvm.VisionMamba)


def test_dyvm_finetune_from_our_vim_then_eval(tmp_path, fashion_mnist):
    run_cli("train", "--model", "vim_tiny", *TINY, "--epochs", "1", "--lr", "2e-3", "--output", tmp_path / "vim")
    # depth differs from the checkpoint: a clear error, not a deep stack trace
    proc = run_cli("train", "--model", "dyvm_vim_tiny", *TINY, "--depth", "4", "--pruning-loc", "1", "2", "3",
                   "--epochs", "1", "--checkpoint", tmp_path / "vim" / "best.pth", "--output", tmp_path / "bad",
                   check=False)
    assert proc.returncode != 0 and "strict loading failed" in proc.stderr.splitlines()[-1]
    run_cli("train", "--model", "dyvm_vim_tiny", *TINY, "--pruning-loc", "1", "--token-keep-ratio", "0.7",
            "--epochs", "1", "--checkpoint", tmp_path / "vim" / "best.pth", "--output", tmp_path / "dyvm")
    log = [json.loads(line) for line in open(tmp_path / "dyvm" / "log.jsonl")]
    assert {"train_kl", "train_token_mse", "train_token_ratio", "train_block_ratio"} <= set(log[0])
    run_cli("train", "--model", "dyvm_vim_tiny", *TINY, "--pruning-loc", "1", "--token-keep-ratio", "0.7",
            "--keep-guidance", "1", "--epochs", "1", "--checkpoint", tmp_path / "vim" / "best.pth",
            "--output", tmp_path / "guided")
    log = [json.loads(line) for line in open(tmp_path / "guided" / "log.jsonl")]
    assert log[0]["train_keep_guidance"] > 0 and "train_kl" in log[0]
    out = tmp_path / "eval.json"
    run_cli("eval", "--checkpoint", tmp_path / "dyvm" / "best.pth", "--token-keep-ratio", "0.5", "--score", "static",
            "--router-threshold", "0.4", "--json", out, "--no-progress", "--latency-batch-sizes", "1", "--threads", "1")
    result = json.loads(out.read_text())
    assert result["images"] == 10000 and result["token_keep"] == [int(0.5 * 16) / 16]
    assert result["score"] == "static" and result["router_threshold"] == 0.4
    assert result["gflops_official"] < result["gflops_full"]
    assert len(result["branch_keep"]) == 2 and 0 <= result["branch_keep_mean"] <= 1
    assert 0 <= result["top1"] <= result["top5"] <= 100


def test_canvas_runs_from_training_through_fine_tuning_to_eval(tmp_path, fashion_mnist):
    canvas = ["--img-size", "35", "--canvas", "35"]  # 25 patches of 7 px, the garment moved by 0-7 px
    run_cli("train", "--model", "vim_tiny", *TINY, *canvas, "--epochs", "1", "--lr", "2e-3", "--output", tmp_path / "vim")
    assert read_checkpoint(tmp_path / "vim" / "best.pth")["train_config"]["canvas"] == 35
    # fine-tuning from it keeps its canvas unless told otherwise; other data sets have none
    from dyvm.engine import TrainConfig

    vim = str(tmp_path / "vim" / "best.pth")
    assert TrainConfig(model="dyvm_vim_tiny", checkpoint=vim).resolved().canvas == 35
    assert TrainConfig(model="dyvm_vim_tiny", checkpoint=vim, canvas=0).resolved().canvas == 0
    assert TrainConfig(model="dyvm_vim_tiny", checkpoint=vim, dataset="imagefolder").resolved().canvas == 0
    run_cli("train", "--model", "dyvm_vim_tiny", *TINY, "--img-size", "35", "--pruning-loc", "1", "--epochs", "1",
            "--checkpoint", tmp_path / "vim" / "best.pth", "--output", tmp_path / "dyvm")
    assert read_checkpoint(tmp_path / "dyvm" / "best.pth")["train_config"]["canvas"] == 35
    results = {}
    for name, extra in (("default", []), ("plain", ["--canvas", "0"])):
        out = tmp_path / f"{name}.json"
        proc = run_cli("eval", "--checkpoint", tmp_path / "dyvm" / "best.pth", "--json", out, "--no-progress",
                       "--latency-batch-sizes", "1", "--threads", "1", *extra)
        results[name] = json.loads(out.read_text())
        assert ("on a 35-px canvas" in proc.stdout) == (name == "default")
    assert results["default"]["canvas"] == 35 and results["plain"]["canvas"] == 0
    assert results["default"]["images"] == results["plain"]["images"] == 10000


@pytest.mark.parametrize("args,match", [
    (["--data-path", "/nonexistent"], "--data-path /nonexistent"),
    (["--dataset", "imagefolder"], "--data-path is required"),
    (["--batch-size", "0"], "batch_size"),
    (["--model", "dyvm_vim_tiny", "--pruning-loc", "1", "--token-keep-ratio", "1.5"], "token_keep_ratio"),
    (["--model", "vim_giant"], "unknown model name"),
    (["--checkpoint", "/nonexistent.pth"], "no such file"),
    (["--model", "dyvm_vim_tiny", "--pruning-loc", "0", "1"], "pruning_loc"),
    (["--model", "dyvm_vim_tiny", "--pruning-loc", "1", "--keep-guidance", "1", "--distill-weight", "0"],
     "--keep-guidance reads a frozen Vim teacher"),
    (["--model", "dyvm_vim_tiny", "--pruning-loc", "1", "--keep-guidance", "-1"], "--keep-guidance must be"),
    (["--canvas", "20"], "--canvas 20: 0 (the garments as they are) or a canvas size of at least 28 px"),
    (["--dataset", "imagefolder", "--data-path", "/tmp", "--canvas", "40"], "applies to --dataset fashion-mnist only"),
])
def test_bad_training_input_is_one_line(tmp_path, args, match, fashion_mnist):
    proc = run_cli("train", *TINY, "--epochs", "1", "--output", tmp_path / "x", *args, check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert match in last and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_checkpoint_of_another_architecture(tmp_path):
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    proc = run_cli("eval", "--model", "vim_tiny", "--checkpoint", tmp_path / "other.pth", check=False)
    assert proc.returncode == 2 and "another architecture" in proc.stderr


# ----------------------------------------------------------------------------- multi-process
def test_two_processes_equal_one_process(tmp_path, fashion_mnist):
    """torchrun with 2 CPU processes (gloo) × batch 16 gives the weights of 1 process × batch 32."""
    common = ["--model", "dyvm_vim_tiny", "--img-size", "28", "--patch-size", "7", "--depth", "3", "--embed-dim", "32",
              "--pruning-loc", "1", "2", "--token-keep-ratio", "0.8", "--subset", "128", "--val-size", "500",
              "--eval-batch-size", "500", "--mixup", "0", "--cutmix", "0", "--aa", "none", "--reprob", "0",
              "--repeated-aug", "1", "--scale-min", "1.0", "--hflip", "0", "--no-progress", "--epochs", "1",
              "--lr", "1e-3", "--warmup-epochs", "0", "--distill-weight", "0", "--block-weight", "0"]
    single = tmp_path / "single"
    run_cli("train", *common, "--batch-size", "32", "--output", single, "--threads", "1")
    multi = tmp_path / "multi"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "dyvm", "train", *common, "--batch-size", "16", "--output", str(multi)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = read_checkpoint(single / "checkpoint.pth")["model"]
    b = read_checkpoint(multi / "checkpoint.pth")["model"]
    assert same_state(a, b, atol=2e-5)
    assert json.load(open(multi / "config.json"))["world_size"] == 2
