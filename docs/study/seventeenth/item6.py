"""Issue 8 item 6 by hand: `dyvm train` a DyVM from the shipped teacher for 2 epochs on 16,384 Fashion-MNIST images with
the CLI defaults plus EXTRA options, then top-1 on 5,000 test images, the FLOPs cut and the keep-score ties per stage
(what tests/test_finetune_defaults.py asserts). Usage: python item6.py OUTDIR [EXTRA ...]"""
import json, subprocess, sys, torch
from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import TEACHER_FILE, _test_loader
from dyvm.evaluate import evaluate
from dyvm.flops import flops_from_stats
out = sys.argv[1]; extra = sys.argv[2:]
subprocess.run([sys.executable, "-m", "dyvm", "train", "--model", "dyvm_vim_tiny", "--checkpoint", TEACHER_FILE, "--dataset",
                "fashion-mnist", "--epochs", "2", "--subset", "16384", "--output", out, "--no-progress", *extra], check=True)
teacher, _ = model_from_checkpoint(TEACHER_FILE); student, _ = model_from_checkpoint(out + "/best.pth")
loader = _test_loader(teacher, None, 5000)
t, s = (evaluate(m, loader, torch.device("cpu"), progress=False) for m in (teacher, student))
cut = 1 - flops_from_stats(student, s)["gflops_official"] / flops_from_stats(teacher, t)["gflops_official"]
print(f"teacher {t['top1']:.2f} DyVM {s['top1']:.2f} drop {t['top1'] - s['top1']:.2f} cut {cut:.3f} ties {s.get('keep_ties')}")
