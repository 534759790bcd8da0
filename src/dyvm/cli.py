"""The ``dyvm`` command (also ``python -m dyvm``). Heavy imports happen inside each subcommand,
so ``--help`` is fast. Every subcommand takes ``--config FILE.yaml`` whose keys are its flags
(``batch_size`` or ``batch-size``); flags given on the command line win."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, Sequence

SUBCOMMANDS = ("train", "eval", "predict", "flops", "bench", "convert", "export", "demo", "viz")


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file whose keys are this command's flags")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: all cores; 1 per process under torchrun)")


def _model_args(p: argparse.ArgumentParser, default: Optional[str] = "vim_tiny") -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=default, help="registered name: vim_tiny|small|base, dyvm_vim_tiny|small|base")
    g.add_argument("--checkpoint", help="weights to load (.pth official/ours, or .safetensors)")
    g.add_argument("--img-size", type=int, help="input resolution (pos_embed is resized when loading)")
    g.add_argument("--patch-size", type=int, help="patch size (and stride)")
    g.add_argument("--depth", type=int, help="number of layers")
    g.add_argument("--embed-dim", type=int, help="model width D")
    g.add_argument("--num-classes", type=int, help="classes of the head (default: from the data or checkpoint)")
    g.add_argument("--in-chans", type=int, help="image channels")
    g.add_argument("--scan-backend", choices=["reference", "torch", "cpp", "cuda", "auto"],
                   help="selective-scan backend (default: $DYVM_SCAN_BACKEND or auto)")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def _dyvm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("DyVM")
    g.add_argument("--token-keep-ratio", type=float, help="ρ: cumulative keep ratios ρ, ρ², ρ³")
    g.add_argument("--block-keep-ratio", type=float, help="β: target fraction of SSM branches that run")
    g.add_argument("--router-threshold", type=float, help="router on-probability threshold (0.5 ⇔ logit > 0)")
    g.add_argument("--score", choices=["predictor", "random", "static"], help="source of token keep scores")
    g.add_argument("--pruning-loc", type=int, nargs="+", help="layers before which tokens are pruned (negative: from the end, e.g. -3 -2 -1)")
    g.add_argument("--predictor-input", choices=["hidden", "B", "delta"],
                   help="what the keep predictors read: hidden (the paper), or the Predictor-B / -Δ ablations")
    g.add_argument("--token-sampler", choices=["gumbel", "topk", "stratified"],
                   help="training keep decisions: gumbel (the paper: per-token Gumbel-softmax) or topk (Gumbel-top-k: "
                        "exactly inference's kept count per image)")
    g.add_argument("--slot-prior", action=argparse.BooleanOptionalAction, default=None,
                   help="learnt positional keep prior that starts at static (evenly spaced) selection; needs "
                        "--token-sampler topk")
    g.add_argument("--token-noise", type=float,
                   help="Gumbel noise scale of --token-sampler topk (1: sample by p(keep); 0: inference's top-k; "
                        "default: the recipe's, dyvm 0, paper 1)")
    g.add_argument("--keep-ratio-source", choices=["decisions", "probabilities"],
                   help="what the keep-ratio loss averages with --token-sampler topk/stratified: the hard decisions "
                        "(default; their mean is rho by construction, so the predictor's p(keep) saturates) or the "
                        "predicted p(keep) (not in the paper)")
    g.add_argument("--pruned-token-grad", action=argparse.BooleanOptionalAction, default=None,
                   help="training: a zero-valued straight-through path from the pruned tokens into the class token, "
                        "so the keep predictor also learns from the tokens it pruned (not in the paper)")
    g.add_argument("--drop-pruned-tail", action=argparse.BooleanOptionalAction, default=None,
                   help="training with --token-sampler topk/stratified drops the pruned tail of the sequence: "
                        "faster, but the pruned tokens' keep decisions get no gradient; --no-drop-pruned-tail keeps "
                        "the paper's masked tail")
    g.add_argument("--baseline-masks", choices=["official", "nested"],
                   help="training masks of --score random/static: official (the paper's Pruning_Strategy ablation: "
                        "masks over all slots, pruned tokens can be revived) or nested (the inference rule per image)")


def _data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "imagefolder"],
                   help="fashion-mnist (idx files) or an ImageFolder: ROOT/train/<class>/* with ROOT/val/<class>/*, "
                        "or a single tree ROOT/<class>/* (split by --val-fraction)")
    g.add_argument("--data-path", help="dataset root (fashion-mnist default: /usr/share/datasets/fashion-mnist)")
    g.add_argument("--canvas", type=int, metavar="PX",
                   help="fashion-mnist: every garment placed on a black PX x PX canvas at its own fixed offset (0: "
                        "as it is; default: what the checkpoint was trained on, else 0)")
    g.add_argument("--batch-size", type=int,
                   help="images per process per step (train: the preset's, 32 for images <= 64 px; eval: 64)")
    g.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
    g.add_argument("--teacher-cache-mb", type=float, default=0.0,
                   help="DyVM: remember the frozen teacher's outputs per input batch, up to this many MiB, for "
                        "runs in one process that see the same batches (the demo's fine-tunes); 0: off")
    g.add_argument("--corrupt", choices=["skip", "fail"], default="skip",
                   help="unreadable images: skip them (counted, warned) or fail naming the file")
    g.add_argument("--subset", type=int, help="use only the first N training images (quick runs)")
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="single ImageFolder tree without train/ val/: share of each class used as val/ (the test "
                        "split), chosen deterministically")
    g.add_argument("--download", action="store_true",
                   help="fetch Fashion-MNIST through torchvision into --data-path when it is missing (needs a network)")


def _task_arg(p: argparse.ArgumentParser, default: Optional[str]) -> None:
    # checked where it is used (one-line error), not by argparse choices
    p.add_argument("--task", default=default, metavar="{classification,segmentation}",
                   help="classification, or segmentation of Fashion-MNIST mosaics (models vim_seg_micro, "
                        "dyvm_vim_seg_micro)" + ("" if default else "; default: what the checkpoint's model does"))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="dyvm", description="Dynamic Vision Mamba: train, evaluate, measure.")
    parser.add_argument("--version", action="version", version=f"dyvm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")

    p = sub.add_parser("train", help="pre-train a Vim, fine-tune a Vim, or fine-tune DyVM with distillation",
                       description="Train on Fashion-MNIST or an ImageFolder. Runs under torchrun for DDP.")
    _common(p), _model_args(p), _dyvm_args(p), _data_args(p)
    _task_arg(p, "classification")
    g = p.add_argument_group("recipe (defaults: the paper's preset for the model size, spec §5)")
    g.add_argument("--output", default="runs/train", help="run folder: checkpoints, log.jsonl, config")
    g.add_argument("--teacher", help="frozen teacher checkpoint for distillation (default: --checkpoint)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--lr", type=float, help="base lr; the effective lr is lr × global batch / 512")
    g.add_argument("--min-lr", type=float)
    g.add_argument("--warmup-epochs", type=int)
    g.add_argument("--warmup-lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--clip-grad", type=float, help="gradient norm clip (default: none)")
    g.add_argument("--mixup", type=float)
    g.add_argument("--cutmix", type=float)
    g.add_argument("--smoothing", type=float, help="label smoothing")
    g.add_argument("--aa", help="RandAugment policy, e.g. rand-m9-mstd0.5-inc1; 'none' to disable")
    g.add_argument("--reprob", type=float, help="random erasing probability")
    g.add_argument("--repeated-aug", type=int, help="repeated augmentation count (1 = off)")
    g.add_argument("--drop-path", type=float)
    g.add_argument("--scale-min", type=float,
                   help="RandomResizedCrop minimum area fraction (default 0.08; 1.0 = no crop for images <= 64 px)")
    g.add_argument("--hflip", type=float,
                   help="horizontal flip probability (default 0.5; 0 for images <= 64 px, e.g. digits)")
    g.add_argument("--no-routers", dest="use_routers", action="store_false",
                   help="token-only ablation: no SSM branch selection")
    g.add_argument("--no-pruning", dest="use_pruning", action="store_false",
                   help="block-only ablation: no token pruning")
    g.add_argument("--recipe", choices=["dyvm", "paper"], default="dyvm",
                   help="DyVM fine-tuning recipe: dyvm (default: the paper's plus the departures named in "
                        "README/docs/study) or paper (exactly the official scripts)")
    g.add_argument("--keep-prior", action=argparse.BooleanOptionalAction, default=None,
                   help="start new predictors at the target keep ratio instead of 1/2 (recipe dyvm: on; paper: off)")
    g.add_argument("--dynamic-lr-scale", type=float,
                   help="lr multiplier of predictors and routers (recipe dyvm: 20; paper: 1)")
    g.add_argument("--ratio-warmup", type=float,
                   help="fraction of the steps over which keep-ratio targets go from 1 to ρ_k and β (paper: 0)")
    g.add_argument("--block-loss-weighting", choices=["layers", "cost"],
                   help="what β counts: layers (the paper: every layer's branches alike) or cost (each layer "
                        "weighted by what its branches cost at inference, its kept tokens)")
    g.add_argument("--keep-guidance", type=float, metavar="W",
                   help="weight of a loss that pulls the keep predictors toward the frozen teacher's own choice of "
                        "patches (those with the most influence on its class token; not in the paper; default 0: "
                        "off). Helps where objects move in the image (docs/study, twenty-second round)")
    g.add_argument("--token-weight", type=float, help="token keep-ratio loss weight (10)")
    g.add_argument("--block-weight", type=float, help="branch keep-ratio loss weight (10)")
    g.add_argument("--distill-weight", type=float, help="distillation weight (0.5)")
    g.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="mixed precision")
    g.add_argument("--ema", action="store_true", help="keep an EMA of the weights")
    g.add_argument("--ema-decay", type=float, default=0.99996)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pth")
    g.add_argument("--max-steps-per-epoch", type=int, help="cap steps per epoch (quick runs)")
    g.add_argument("--val-size", type=int,
                   help="images held out of the training set for model selection (default: 10%%, at most 5,000)")
    g.add_argument("--eval-batch-size", type=int, default=256)
    g.add_argument("--tensorboard", action="store_true")
    g.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("eval", help="accuracy, keep ratios, GFLOPs, latency of a checkpoint",
                       description="Evaluate on the test split (Fashion-MNIST test set, or val/ of an ImageFolder).")
    _common(p), _model_args(p, default=None), _dyvm_args(p), _data_args(p)
    _task_arg(p, None)
    p.add_argument("--split", default="test", choices=["test", "val"], help="test split, or the held-out validation split")
    p.add_argument("--val-size", type=int, help="held-out split size as in training (default: 10%%, at most 5,000)")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument("--latency-batch-sizes", type=int, nargs="*", default=[1, 64])
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="accuracy pass in fp32 or bf16 autocast")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("predict", help="classify image files or folders with a trained checkpoint",
                       description="Top-k classes (names from the checkpoint) and probabilities per image; for DyVM "
                                   "also the kept-token fraction and the share of SSM branches that ran.")
    _common(p)
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders (searched recursively)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by dyvm train (or an official one with --model)")
    p.add_argument("--model", help="model name, for an official checkpoint without the architecture inside")
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="JSON output: to stdout (--json alone) or to FILE (written atomically)")
    p.add_argument("--token-keep-ratio", type=float)
    p.add_argument("--router-threshold", type=float)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("flops", help="G multiply-accumulates per image (official and full conventions)")
    _common(p), _model_args(p), _dyvm_args(p)
    p.add_argument("--convention", choices=["official", "full", "both"], default="both")
    p.add_argument("--branch-keep-ratio", type=float, help="average branch keep ratio (default: β for DyVM)")
    p.add_argument("--target-gflops", type=float, help="solve for the token keep ratio meeting this budget")

    p = sub.add_parser("bench", help="speed comparisons in interleaved rounds (backends, DyVM vs Vim, bf16, peers, builds)")
    _common(p)
    p.add_argument("--what", choices=["backbone", "dyvm", "all", "dtype", "peers", "train-step"], default="all",
                   help="backbone: scan backends; dyvm: DyVM vs Vim; all: both; dtype: fp32 vs bf16; peers: dyvm vs "
                        "mambapy's Vim vs the reference scan; train-step: the demo's training steps against --against")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default: train-step 7, backbone 5, dyvm/dtype 15, peers 3)")
    p.add_argument("--precision", type=float, default=0.02,
                   help="after --rounds, add rounds (up to --max-rounds) until every median ratio's 95%% confidence "
                        "interval is within ± this fraction of it (default 0.02; 0: exactly --rounds)")
    p.add_argument("--max-rounds", type=int, help="most rounds --precision may run (default: 3 x --rounds)")
    p.add_argument("--repeats", type=int, help="calls per arm and round (default: about 0.5 s per arm; peers 1)")
    p.add_argument("--warmup", type=int, help="untimed calls per arm first (default 1; train-step: 2 steps)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="inference precision (bf16: autocast)")
    p.add_argument("--throughput", action="store_true",
                   help="dyvm: official-style throughput at one large batch, images/s and acceleration over the teacher")
    p.add_argument("--throughput-batch", type=int, help="batch of --throughput (default: 64 on CPU, 256 on CUDA)")
    p.add_argument("--compile", action="store_true",
                   help="dyvm: both models under torch.compile (CUDA graphs on CUDA); DyVM then masks skipped "
                        "branches instead of skipping them")
    p.add_argument("--against", metavar="CHECKOUT", help="train-step: the other build (a checkout or its src; "
                   "default: this build, an A/A run)")
    p.add_argument("--steps", type=int, default=2, help="train-step: timed steps per build, kind and round")
    p.add_argument("--kinds", nargs="+", choices=["dyvm", "vim", "dyvm-eval", "vim-eval"], default=["dyvm", "vim"],
                   help="train-step: training steps, and/or the same models' inference (-eval)")
    p.add_argument("--autocast", action="store_true", help="train-step: bf16 autocast in this build's steps")
    p.add_argument("--against-autocast", action="store_true", help="train-step: bf16 autocast in the other's")
    p.add_argument("--model", default="vim_tiny", help="model of the backend and dtype tables")
    p.add_argument("--checkpoint", nargs="+", help="dtype: models from these checkpoints instead of --model")
    p.add_argument("--sizes", nargs="+", default=["tiny", "small"], help="sizes for the DyVM table")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--train-batch", type=int,
                   help="batch of train-step's steps (default: 128 for --step-model demo and canvas, 8 for tiny; e.g. 1 to time "
                        "inference at batch 1 with --kinds vim-eval dyvm-eval) and of the backbone table's training "
                        "step (default 8)")
    p.add_argument("--step-model", choices=["demo", "canvas", "tiny"], default="demo",
                   help="train-step: the centred demo's configuration (28 px), the canvas demo's (40 px, pruning "
                        "before layer 2), or the vim_tiny / dyvm_vim_tiny presets at 224 px")
    p.add_argument("--backends", nargs="+", choices=["reference", "torch", "cpp", "cuda"])
    p.add_argument("--routers-on", type=float, default=0.8, help="fraction of SSM branches that run in DyVM")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", help="also write the results (every round's times) as JSON")

    p = sub.add_parser("convert", help="official .pth ↔ .safetensors")
    _common(p)
    p.add_argument("src", help="input checkpoint (.pth or .safetensors)")
    p.add_argument("dst", help="output file (.safetensors or .pth)")
    p.add_argument("--key", default="auto", help="state dict key in a .pth: auto, model, model_ema")

    p = sub.add_parser("export", help="a checkpoint as a torch.export program (.pt2)",
                       description="Write the checkpoint's model (eval mode) as a torch.export program, atomically. "
                                   "To run it: `import dyvm.kernels` (registers dyvm's custom ops) before "
                                   "torch.export.load(OUT).module()(images), or dyvm.load_exported(OUT).")
    _common(p)
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint written by dyvm train (or an official one with --model)")
    p.add_argument("output", metavar="OUT.pt2", help="program file to write")
    p.add_argument("--model", help="model name, for an official checkpoint without the architecture inside")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the traced input (the program's, "
                   "unless --dynamic-batch)")
    p.add_argument("--dynamic-batch", action="store_true", help="the program takes any batch size")

    p = sub.add_parser("demo", help="the paper's pipeline in miniature on Fashion-MNIST, with a report")
    _common(p)
    p.add_argument("--output", default="dyvm-demo", help="report folder (written atomically)")
    p.add_argument("--data-path", help="Fashion-MNIST idx files (default: Debian's dataset-fashion-mnist)")
    p.add_argument("--download", action="store_true",
                   help="fetch Fashion-MNIST through torchvision into --data-path (default ./data) when it is missing")
    p.add_argument("--quick", action="store_true", help="a ~2-minute smoke run")
    p.add_argument("--long", action="store_true", help="the longer run that checks the paper's claim")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--finetune-epochs", type=int, help="epochs of each fine-tuning run (DyVM, random, static)")
    p.add_argument("--train-teacher", action="store_true",
                   help="train the teacher in the run with the shipped teacher's recipe instead of loading it")
    p.add_argument("--recipe", choices=["dyvm", "paper"], help="DyVM fine-tuning recipe (default: dyvm)")
    p.add_argument("--baseline-masks", choices=["nested", "official"],
                   help="training masks of the trained random/static baselines: nested per image (default) or the "
                        "paper's ablation (batch-level, pruned tokens revived)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (phase and epoch lines are still printed)")
    _task_arg(p, "classification")

    p = sub.add_parser("viz", help="which patches survive each pruning stage, for one image")
    _common(p)
    p.add_argument("image", help="an image file (PNG, JPEG, ...)")
    p.add_argument("--checkpoint", required=True, help="a DyVM checkpoint written by dyvm train")
    p.add_argument("--output", default="pruning.png", help="PNG to write")
    p.add_argument("--token-keep-ratio", type=float)
    return parser


def _apply_config(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        import yaml

        try:
            with open(args.config) as fh:
                values = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise CLIError(f"--config {args.config}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise CLIError(f"--config {args.config}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise CLIError(f"--config {args.config}: expected a mapping of flag names to values")
        sub = parser._subparsers._group_actions[0].choices[args.command]  # noqa: SLF001
        known = {a.dest: a for a in sub._actions}  # noqa: SLF001
        defaults = {}
        for key, value in values.items():
            dest = str(key).replace("-", "_")
            if dest not in known or dest in ("help", "config"):
                raise CLIError(f"--config {args.config}: unknown key {key!r} for 'dyvm {args.command}'")
            defaults[dest] = value
        sub.set_defaults(**defaults)
        args = parser.parse_args(argv)
    return args


def _setup_threads(args: argparse.Namespace) -> None:
    import torch

    threads = getattr(args, "threads", None)
    if threads is None and "LOCAL_RANK" in os.environ:
        threads = 1
    if threads is not None:
        if threads < 1:
            raise CLIError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "train": lambda a: __import__("dyvm.engine", fromlist=["x"]).train_cli(a),
        "eval": lambda a: __import__("dyvm.evaluate", fromlist=["x"]).eval_cli(a),
        "flops": _flops_cli,
        "bench": lambda a: __import__("dyvm.bench", fromlist=["x"]).main(a),
        "convert": _convert_cli,
        "export": lambda a: __import__("dyvm.export", fromlist=["x"]).export_cli(a),
        "demo": _demo_cli,
        "viz": lambda a: __import__("dyvm.viz", fromlist=["x"]).viz_cli(a),
        "predict": lambda a: __import__("dyvm.prediction", fromlist=["x"]).predict_cli(a),
    }
    return handlers[args.command](args)


def _demo_cli(args: argparse.Namespace) -> int:
    from .model_options import check_task

    check_task(args.task)
    if args.task == "segmentation":
        return __import__("dyvm.demo_segmentation", fromlist=["x"]).segmentation_demo_cli(args)
    return __import__("dyvm.demo", fromlist=["x"]).demo_cli(args)


def _flops_cli(args: argparse.Namespace) -> int:
    from .flops import count_flops, solve_keep_ratio
    from .model_options import given_options, model_overrides, refuse_dynamic_options
    from .models import create_model
    from .models.registry import is_dynamic_name

    dynamic = is_dynamic_name(args.model)
    if not dynamic:
        refuse_dynamic_options(args.model, given_options(args), "count")
    model = create_model(args.model, **model_overrides(args, dynamic=dynamic))
    if args.checkpoint:
        from .checkpoint import load_checkpoint

        load_checkpoint(model, args.checkpoint)
    conventions = ["official", "full"] if args.convention == "both" else [args.convention]
    for conv in conventions:
        g = count_flops(model, conv, branch_keep_ratio=args.branch_keep_ratio)
        print(f"{args.model} {conv:8s} {g:.3f} GMACs/image")
    if args.target_gflops is not None:
        rho = solve_keep_ratio(model, args.target_gflops, branch_keep_ratio=args.branch_keep_ratio)
        print(f"token keep ratio for <= {args.target_gflops} G (official): {rho:.4f}")
    return 0


def _convert_cli(args: argparse.Namespace) -> int:
    from .checkpoint import convert_checkpoint

    n = convert_checkpoint(args.src, args.dst, key=args.key)
    print(f"wrote {args.dst} ({n} tensors)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _apply_config(parser, argv)
        if not args.command:
            parser.print_help()
            return 2
        _setup_threads(args)
        from .utils import retain_freed_memory

        retain_freed_memory()
        return _run(args)
    except CLIError as exc:
        print(f"dyvm: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        if os.environ.get("DYVM_DEBUG"):
            raise
        print(f"dyvm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dyvm: interrupted", file=sys.stderr)
        return 130
