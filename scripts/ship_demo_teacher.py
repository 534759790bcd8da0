"""Ship a finished ``dyvm train`` run as the demo's teacher: ``dyvm.demo.TEACHER_FILE`` and its card ``TEACHER_CARD``.

    python scripts/ship_demo_teacher.py RUN_DIR --commit SHA --command "dyvm train ..."

Writes the run's best checkpoint (weights, architecture and data config only) and its card: the
command, seed, commit and training log, the sha256 of the shipped file, and the top-1 measured here
on the full Fashion-MNIST test split (the number `tests/test_demo_teacher.py` checks).
"""
import argparse
import json
import os
import platform
import time

import torch

from dyvm.utils import cpu_name
from dyvm.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from dyvm.demo import TEACHER_CARD, TEACHER_FILE, _test_loader, sha256_of
from dyvm.evaluate import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--commit", required=True, help="the commit the run was trained at")
    ap.add_argument("--command", required=True, help="the exact command that trained it")
    args = ap.parse_args()
    best = os.path.join(args.run_dir, "best.pth")
    ckpt = read_checkpoint(best)
    model, _ = model_from_checkpoint(ckpt)
    with open(os.path.join(args.run_dir, "config.json")) as fh:
        config = json.load(fh)
    # the run's options go with the weights: fine-tuning and `dyvm eval` read the canvas it learnt on from them
    save_checkpoint(TEACHER_FILE, model, epoch=ckpt["epoch"], val_top1=ckpt["val_top1"], train_config=config)
    loader = _test_loader(model, None, None, canvas=config.get("canvas") or 0)
    stats = evaluate(model, loader, torch.device("cpu"), progress=False)
    with open(os.path.join(args.run_dir, "log.jsonl")) as fh:
        log = [json.loads(line) for line in fh if line.strip()]
    card = dict(file=os.path.basename(TEACHER_FILE), sha256=sha256_of(TEACHER_FILE), command=args.command,
                seed=config["seed"], commit=args.commit, train_config=config, training_log=log,
                best_epoch=ckpt["epoch"], val_top1=ckpt["val_top1"], test_top1=stats["top1"], test_top5=stats["top5"],
                test_images=10000, shipped=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                machine=f"{cpu_name()}, {os.cpu_count()} cores", torch_version=torch.__version__,
                python=platform.python_version(),
                note="test_top1 is measured on the full Fashion-MNIST test split, which the run never saw "
                     "(model selection used the 5,000 validation images held out of the training set)")
    with open(TEACHER_CARD, "w") as fh:
        json.dump(card, fh, indent=1)
    print(f"shipped {TEACHER_FILE}: val {ckpt['val_top1']:.2f}%, test {stats['top1']:.2f}%")


if __name__ == "__main__":
    main()
