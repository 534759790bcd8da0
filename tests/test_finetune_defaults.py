"""`dyvm train` defaults that work: DyVM fine-tuned from a good Vim on a small real dataset for 2 epochs keeps
its accuracy (issue 8, item 6). Real data (Fashion-MNIST), the real shipped teacher, the CLI as a user runs it."""
import json
import subprocess
import sys

import torch

from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import TEACHER_FILE, _test_loader
from dyvm.evaluate import evaluate
from dyvm.flops import flops_from_stats


def test_two_epochs_with_the_defaults_stay_within_3_points_at_30pct_fewer_flops(tmp_path):
    out = tmp_path / "dyvm"
    proc = subprocess.run([sys.executable, "-m", "dyvm", "train", "--model", "dyvm_vim_tiny", "--checkpoint", TEACHER_FILE,
                           "--token-keep-ratio", "0.7", "--epochs", "2", "--subset", "4096", "--output", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "dyvm" and config["epochs"] == 2  # nothing but the defaults
    teacher, _ = model_from_checkpoint(TEACHER_FILE)
    student, _ = model_from_checkpoint(out / "best.pth")
    loader = _test_loader(teacher, None, 3000)
    t, s = (evaluate(m, loader, torch.device("cpu"), progress=False) for m in (teacher, student))
    cut = 1 - flops_from_stats(student, s)["gflops_official"] / flops_from_stats(teacher, t)["gflops_official"]
    assert cut >= 0.30, cut
    assert t["top1"] - s["top1"] <= 3.0, (t["top1"], s["top1"])
