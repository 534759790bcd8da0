"""`dyvm train` defaults that work (issue 8, item 6): DyVM fine-tuned from a good Vim on a small real data
set for 2 epochs, with nothing but the defaults, keeps the Vim's accuracy within 3 points at >= 30% fewer
FLOPs. Real data (Fashion-MNIST, centred 28-px images), the shipped centred Vim teacher, the CLI as a user runs it."""
import json
import subprocess
import sys

import torch

from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import CENTRED_TEACHER_FILE as TEACHER_FILE, _test_loader
from dyvm.engine import SMALL_DYVM_POINT
from dyvm.evaluate import evaluate
from dyvm.flops import flops_from_stats

SUBSET = 16384  # training images: a small data set (2 epochs = 256 steps of 128; 8,192 lost 3.8 points)


def test_two_epochs_with_the_defaults_stay_within_3_points_at_30pct_fewer_flops(tmp_path, fashion_mnist):
    out = tmp_path / "dyvm"
    proc = subprocess.run([sys.executable, "-m", "dyvm", "train", "--model", "dyvm_vim_tiny", "--checkpoint",
                           TEACHER_FILE, "--dataset", "fashion-mnist", "--epochs", "2", "--subset", str(SUBSET),
                           "--output", str(out), "--no-progress"], capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    # nothing but the defaults: the dyvm recipe and its small-image operating point
    assert config["recipe"] == "dyvm" and config["epochs"] == 2 and config["token_sampler"] == "topk"
    assert config["pruning_loc"] == SMALL_DYVM_POINT["pruning_loc"]
    teacher, _ = model_from_checkpoint(TEACHER_FILE)
    student, _ = model_from_checkpoint(out / "best.pth")
    assert student.pruning_loc == [5, 6, 7]  # the last three of the teacher's 8 layers
    # a stage whose keep scores tie in most validation images is named in a warning after the last epoch
    last = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][-1]
    assert len(last["val_keep_ties"]) == 3
    assert ("keep predictor ties across the top-k cut" in proc.stderr) == (max(last["val_keep_ties"]) > 0.5)
    loader = _test_loader(teacher, None, 5000, canvas=0)
    t, s = (evaluate(m, loader, torch.device("cpu"), progress=False) for m in (teacher, student))
    cut = 1 - flops_from_stats(student, s)["gflops_official"] / flops_from_stats(teacher, t)["gflops_official"]
    assert cut >= 0.30, f"FLOPs cut {cut:.3f}"
    assert t["top1"] - s["top1"] <= 3.0, f"teacher {t['top1']:.2f}, DyVM {s['top1']:.2f}"
