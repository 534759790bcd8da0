"""Benchmarks (not tests): ``dyvm bench``. Every comparison runs in one process in interleaved rounds
(:func:`dyvm.timing.interleave`: warm-up, then A B, B A, ... with the threads fixed) and is reported
as the median of the per-round ratios with its quartiles and min-max, from wall-clock and CPU time.

``backbone``: Vim per scan backend at each batch size, against the same forward with the scan
replaced by a zero-cost stub (the "matmul floor"), and a training step (forward+backward).
``dyvm``: DyVM vs Vim latency (random weights, routers set so that about 80% of branches run)
next to the FLOPs cut: are the savings real? With ``--throughput``: the official style, one large
batch, images/s and the acceleration over the teacher.
``dtype``: fp32 against bf16 (autocast) inference. ``peers``: dyvm's Vim-T against mambapy's Vim
and the ``reference`` scan backend. ``train-step``: the demo's training steps, this build against
another checkout (two worker processes; :mod:`dyvm.bench_train`).
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

import torch

from .timing import Runner, format_comparison, interleave, rounds_text, spread_note, timed
from .utils import cpu_name

DEFAULT_BACKENDS = ("reference", "torch", "cpp", "cuda")
DTYPES = {"fp32": None, "bf16": torch.bfloat16}
FLOOR = "matmul floor (scan stubbed)"


@contextlib.contextmanager
def stub_scan():
    """Replace the selective scan by a zero-cost stub (returns its input) inside the models."""
    from .kernels import mix_cpp
    from .kernels import scan as scan_mod

    original = scan_mod.selective_scan  # the mixer's branches call it through the module (mixer_ops.ssm_branch)
    scan_mod.selective_scan = lambda u, *args, **kwargs: u
    mix_cpp.STUB_SCAN[0] = True  # the fused inference mixer's scan likewise
    try:
        yield
    finally:
        scan_mod.selective_scan = original
        mix_cpp.STUB_SCAN[0] = False


def autocast_context(device: torch.device, dtype: str):
    """bf16 autocast (fp32 weights, matmuls and convs in bf16), or nothing for fp32."""
    if DTYPES.get(dtype, "bad") == "bad":
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if DTYPES[dtype] is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def compiled(model, device: torch.device):
    """``torch.compile`` of ``model``; on CUDA with CUDA graphs (mode "reduce-overhead"), since small
    batches there are bound by the host's kernel launches."""
    return torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else None)


def inference_runner(model, batch: int, device: torch.device, dtype: str = "fp32", stub: bool = False,
                     seed: int = 0, compile: bool = False) -> Runner:
    """A runner of ``model``'s eval forward on a fixed random batch (B, C, H, W); ``compile``: of
    :func:`compiled` (compiled at the first call, so give the runner warm-up calls)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, model.in_chans, model.img_size, model.img_size, generator=gen).to(device)
    fn = compiled(model, device) if compile else model

    def forward():
        with torch.no_grad(), autocast_context(device, dtype), (stub_scan() if stub else contextlib.nullcontext()):
            fn(x)

    return timed(forward, device)


def train_runner(model, batch: int, device: torch.device, dtype: str = "fp32") -> Runner:
    """A runner of a training step (forward, sum of the logits, backward) on a fixed random batch."""
    model.train()
    x = torch.randn(batch, model.in_chans, model.img_size, model.img_size, device=device)

    def step():
        with autocast_context(device, dtype):
            out = model(x)
        logits = out if torch.is_tensor(out) else out.logits
        logits.float().sum().backward()
        model.zero_grad(set_to_none=True)

    return timed(step, device)


def build_model(name: str, device: torch.device, backend: Optional[str] = None, routers_on: Optional[float] = None,
                checkpoint: Optional[str] = None, **overrides):
    """A registered model (random weights, seed 0) or one from a checkpoint, on ``device``."""
    from .models import create_model

    torch.manual_seed(0)
    if checkpoint:
        from .evaluate import load_for_eval

        model = load_for_eval(checkpoint, None, overrides)
    else:
        model = create_model(name, **overrides)
    if routers_on is not None:
        set_router_pattern(model, routers_on)
    if backend:
        model.set_scan_backend(backend)
    return model.to(device)


def set_router_pattern(model, fraction_on: float, seed: int = 0) -> float:
    """Routers with weight 0 and bias ±5 so that a fixed ``fraction_on`` of (layer, direction) branches
    runs for every image. Returns the realised fraction."""
    if not model.is_dynamic or not model.use_routers:
        return 1.0
    depth = model.depth
    n_on = round(fraction_on * depth * 2)
    gen = torch.Generator().manual_seed(seed)
    on = torch.zeros(depth * 2, dtype=torch.bool)
    on[torch.randperm(depth * 2, generator=gen)[:n_on]] = True
    on = on.view(depth, 2)
    with torch.no_grad():
        for layer, flags in zip(model.layers, on):
            layer.mixer.block_head.weight.zero_()
            layer.mixer.block_head.bias.copy_(torch.where(flags, 5.0, -5.0))
    return n_on / (depth * 2)


def cold_build_seconds() -> Optional[float]:
    """Seconds to compile the C++ scan from scratch (a fresh cache, in a child process)."""
    with tempfile.TemporaryDirectory() as tmp:
        code = ("import time,sys; t=time.perf_counter(); from dyvm.kernels import scan_cpp; "
                "ok=scan_cpp.available(); print(time.perf_counter()-t if ok else -1)")
        env = dict(os.environ, DYVM_EXT_DIR=tmp)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
        try:
            value = float(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None
        return value if value >= 0 else None


def machine_line(threads: int, device: torch.device) -> str:
    cpu = cpu_name()
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu}, {os.cpu_count()} cores, "
            f"torch threads {threads}{gpu}, torch {torch.__version__}")


def available_backends(device: torch.device, wanted=DEFAULT_BACKENDS) -> list[str]:
    from .kernels import scan_cpp, scan_cuda

    names = []
    for name in wanted:
        if name == "cpp" and (device.type != "cpu" or not scan_cpp.available()):
            continue
        if name == "cuda" and (device.type != "cuda" or not scan_cuda.available()):
            continue
        names.append(name)
    return names


def _setup(threads: Optional[int], device: str) -> tuple[int, torch.device]:
    """Fix the torch threads for the whole run (every arm of every round uses the same)."""
    threads = threads or os.cpu_count() or 1
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads, torch.device(device)


def _progress(enabled: bool) -> Optional[Callable[[str], None]]:
    return (lambda m: print(f"  {m}", file=sys.stderr, flush=True)) if enabled else None


def _rounds_kwargs(rounds: int, repeats: Optional[int], warmup: int, progress: bool,
                   precision: Optional[float] = None, max_rounds: Optional[int] = None) -> dict:
    return dict(rounds=rounds, repeats=repeats, warmup=warmup, progress=_progress(progress), precision=precision,
                max_rounds=max_rounds)


def bench_backbone(model: str = "vim_tiny", batch_sizes=(1, 8), backends=None, threads: Optional[int] = None,
                   device: str = "cpu", rounds: int = 5, repeats: Optional[int] = None, warmup: int = 1,
                   train_batch: int = 8, dtype: str = "fp32", progress: bool = True,
                   precision: Optional[float] = None, max_rounds: Optional[int] = None) -> dict:
    """The Vim backbone per scan backend and the matmul floor, interleaved per batch size (see module doc)."""
    from .kernels import scan_cpp
    from .kernels.scan import resolve_backend

    threads, dev = _setup(threads, device)
    default = resolve_backend(None, dev)
    backends = [default] + [b for b in available_backends(dev, backends or DEFAULT_BACKENDS) if b != default]
    models = {b: build_model(model, dev, b) for b in backends}   # the default first: the baseline of the ratios
    groups: dict[str, dict[str, Runner]] = {}
    units = {}
    for b in batch_sizes:
        arms = {name: inference_runner(m, b, dev, dtype) for name, m in models.items()}
        arms[FLOOR] = inference_runner(models[default], b, dev, dtype, stub=True)
        groups[f"eval b{b}"], units[f"eval b{b}"] = arms, b
    train_model = build_model(model, dev, default)
    groups[f"train step b{train_batch}"] = {default: train_runner(train_model, train_batch, dev, dtype)}
    units[f"train step b{train_batch}"] = train_batch
    res = interleave(groups, units=units, **_rounds_kwargs(rounds, repeats, warmup, progress, precision, max_rounds))
    summary = {}
    for b in batch_sizes:
        g = res["groups"][f"eval b{b}"]
        floor = g["ratios"][FLOOR]["wall"]["time_summary"]["median"]
        summary[f"scan_share_b{b}"] = max(0.0, 1 - floor)
        if "reference" in g["ratios"]:
            ref = g["ratios"]["reference"]["wall"]["time_summary"]["median"]
            summary[f"speedup_vs_reference_b{b}"] = ref
            if floor < 1:  # the scans alone: total minus the floor, in units of the default's time
                summary[f"scan_only_speedup_vs_reference_b{b}"] = (ref - floor) / (1 - floor)
    build = cold_build_seconds() if "cpp" in backends else None
    return dict(model=model, device=device, dtype=dtype, threads=threads, default_backend=default, result=res,
                summary=summary, cpp_cold_build_s=build, cpp_load_s=scan_cpp.build_seconds(),
                machine=machine_line(threads, dev), table=format_comparison(res, "wall"),
                table_cpu=format_comparison(res, "cpu"))


def flops_cut(size: str, routers_on: float, branches_masked: bool = False) -> dict:
    """DyVM-Vim's FLOPs reduction against Vim of ``size`` (official and full conventions).
    ``branches_masked``: what a compiled DyVM computes (every branch, the skipped ones masked, README
    "Compile and export"), so only the token pruning counts."""
    from .flops import count_flops
    from .models import create_model

    model = create_model(f"dyvm_vim_{size}")
    realised = set_router_pattern(model, routers_on)
    computed = 1.0 if branches_masked else realised
    teacher = create_model(f"vim_{size}")
    return dict(branch_keep=realised, branch_keep_computed=computed,
                official=1 - count_flops(model, "official", branch_keep_ratio=computed) / count_flops(teacher, "official"),
                full=1 - count_flops(model, "full", branch_keep_ratio=computed) / count_flops(teacher, "full"))


def bench_dyvm(sizes=("tiny", "small"), batch_sizes=(1, 8), threads: Optional[int] = None, device: str = "cpu",
               routers_on: float = 0.8, rounds: int = 15, repeats: Optional[int] = None, warmup: int = 1,
               dtype: str = "fp32", throughput: bool = False, progress: bool = True,
               precision: Optional[float] = None, max_rounds: Optional[int] = None, compile: bool = False) -> dict:
    """DyVM vs Vim, interleaved per (size, batch), next to the FLOPs cut. ``throughput``: one large batch
    (``batch_sizes[0]``), reported as images/s and the acceleration over the teacher. ``compile``: both
    models under :func:`compiled` (at least 2 warm-up calls: the first compiles), and the FLOPs cut is
    what compiled DyVM computes (its skipped branches are masked, not skipped)."""
    threads, dev = _setup(threads, device)
    if compile:
        warmup = max(warmup, 2)
    groups, units, meta = {}, {}, {}
    for size in sizes:
        vim = build_model(f"vim_{size}", dev)
        dy = build_model(f"dyvm_vim_{size}", dev, routers_on=routers_on)
        for b in batch_sizes:
            key = f"{size} b{b}"
            groups[key] = {"Vim": inference_runner(vim, b, dev, dtype, compile=compile),
                           "DyVM": inference_runner(dy, b, dev, dtype, compile=compile)}
            units[key], meta[key] = b, (size, b)
    res = interleave(groups, units=units, **_rounds_kwargs(rounds, repeats, warmup, progress, precision, max_rounds))
    rows, table_rows = [], []
    cuts = {size: flops_cut(size, routers_on, branches_masked=compile) for size in sizes}
    for key, (size, b) in meta.items():
        g = res["groups"][key]
        f = cuts[size]
        row = dict(size=size, batch=b, flops_reduction_official=f["official"], flops_reduction_full=f["full"],
                   branch_keep=f["branch_keep"], branch_keep_computed=f["branch_keep_computed"])
        for clock in ("wall", "cpu"):
            t = g["ratios"]["DyVM"][clock]["time_summary"]
            s = g["ratios"]["DyVM"][clock]["speedup_summary"]
            row[f"vim_ms_{clock}"] = 1e3 * g["arms"]["Vim"]["seconds_summary"][clock]["median"]
            row[f"dyvm_ms_{clock}"] = 1e3 * g["arms"]["DyVM"]["seconds_summary"][clock]["median"]
            row[f"latency_reduction_{clock}"] = 1 - t["median"]
            row[f"latency_reduction_{clock}_iqr"] = [1 - t["q3"], 1 - t["q1"]]
            row[f"latency_reduction_{clock}_range"] = [1 - t["max"], 1 - t["min"]]
            row[f"acceleration_{clock}"] = s["median"]
            row[f"images_per_s_{clock}"] = {a: g["arms"][a]["items_per_s"][clock] for a in ("Vim", "DyVM")}
        # the goal (issue 10): latency cut >= 0.9 x the FLOPs cut in the official convention; the full
        # convention (everything the model computes) is the stricter second column
        for conv in ("official", "full"):
            row[f"latency_over_flops_cut_{conv}"] = row["latency_reduction_wall"] / f[conv]
        row["goal_met"] = row["latency_reduction_wall"] >= 0.9 * f["official"]
        rows.append(row)
        if throughput:
            ips = row["images_per_s_wall"]
            s = g["ratios"]["DyVM"]["wall"]["speedup_summary"]
            table_rows.append([f"vim_{size}", b, f"{ips['Vim']:.1f}", f"{ips['DyVM']:.1f}", f"{s['median']:.3f}×",
                               f"{s['q1']:.3f}-{s['q3']:.3f}", f"{row['acceleration_cpu']:.3f}×",
                               f"{100 * f['official']:.1f}%"])
        else:
            cut = lambda c: (f"{100 * row[f'latency_reduction_{c}']:.1f}% "
                             f"({100 * row[f'latency_reduction_{c}_iqr'][0]:.1f}..{100 * row[f'latency_reduction_{c}_iqr'][1]:.1f})")
            table_rows.append([f"vim_{size}", b, f"{row['vim_ms_wall']:.1f}", f"{row['dyvm_ms_wall']:.1f}", cut("wall"),
                               cut("cpu"), f"{100 * f['official']:.1f}%", f"{100 * f['full']:.1f}%",
                               f"{row['latency_over_flops_cut_official']:.2f} / {row['latency_over_flops_cut_full']:.2f}",
                               "yes" if row["goal_met"] else "no"])
    from .utils import format_table

    if throughput:
        head = ["model", "batch", "Vim img/s", "DyVM img/s", "acceleration (wall, median)", "IQR",
                "acceleration (cpu)", "FLOPs cut (official)"]
    else:
        head = ["model", "batch", "Vim ms", "DyVM ms", "latency cut wall (IQR)", "latency cut cpu (IQR)",
                "FLOPs cut (official)", "FLOPs cut (full)", "latency cut / FLOPs cut (official / full)",
                "≥ 0.9 (official)"]
    return dict(rows=rows, result=res, table=format_table(head, table_rows), threads=threads, routers_on=routers_on,
                dtype=dtype, throughput=throughput, compile=compile, machine=machine_line(threads, dev))


def bench_dtype(models=("vim_tiny",), checkpoints=(), batch_sizes=(1, 8), threads: Optional[int] = None,
                device: str = "cpu", rounds: int = 15, repeats: Optional[int] = None, warmup: int = 1,
                progress: bool = True, precision: Optional[float] = None, max_rounds: Optional[int] = None) -> dict:
    """fp32 against bf16 autocast inference, interleaved per (model, batch); speedup = fp32 time / bf16 time."""
    threads, dev = _setup(threads, device)
    nets = {name: build_model(name, dev) for name in models}
    names = [os.path.basename(p) for p in checkpoints]
    nets.update({(name if names.count(name) == 1 else path): build_model("", dev, checkpoint=path)
                 for name, path in zip(names, checkpoints)})
    groups, units = {}, {}
    for label, net in nets.items():
        for b in batch_sizes:
            key = f"{label} b{b}"
            groups[key] = {"fp32": inference_runner(net, b, dev, "fp32"), "bf16": inference_runner(net, b, dev, "bf16")}
            units[key] = b
    res = interleave(groups, units=units, **_rounds_kwargs(rounds, repeats, warmup, progress, precision, max_rounds))
    return dict(result=res, threads=threads, machine=machine_line(threads, dev),
                table=format_comparison(res, "wall", what="speedup"), table_cpu=format_comparison(res, "cpu", "speedup"))


def bench_peers(batch_sizes=(1, 8), threads: Optional[int] = None, device: str = "cpu", rounds: int = 3,
                repeats: Optional[int] = 1, warmup: int = 1, dtype: str = "fp32", progress: bool = True,
                precision: Optional[float] = None, max_rounds: Optional[int] = None) -> dict:
    """dyvm's Vim-T (default backend) against mambapy's Vim-T and dyvm with the ``reference`` scan, interleaved
    per batch size; ratio = the peer's time / dyvm's time (how many times faster dyvm is)."""
    from .bench_peers import mambapy_vim
    from .kernels.scan import resolve_backend

    threads, dev = _setup(threads, device)
    peer = mambapy_vim().to(dev)
    default = resolve_backend(None, dev)
    ours, ref = build_model("vim_tiny", dev, default), build_model("vim_tiny", dev, "reference")
    arms = {f"dyvm ({default})": ours, "mambapy Vim": peer, "dyvm (reference)": ref}
    groups = {f"b{b}": {name: inference_runner(m, b, dev, dtype) for name, m in arms.items()} for b in batch_sizes}
    res = interleave(groups, units={f"b{b}": b for b in batch_sizes},
                     **_rounds_kwargs(rounds, repeats, warmup, progress, precision, max_rounds))
    return dict(result=res, threads=threads, dtype=dtype, machine=machine_line(threads, dev),
                table=format_comparison(res, "wall"), table_cpu=format_comparison(res, "cpu"))


def _write_json(path: str, out: dict) -> None:
    from .checkpoint import atomic_write

    payload = {k: {kk: vv for kk, vv in v.items() if not kk.startswith("table")} for k, v in out.items()}
    atomic_write(path, lambda tmp: open(tmp, "w").write(json.dumps(payload, indent=2)))


def main(args) -> int:
    """Entry of ``dyvm bench`` (args from the CLI)."""
    out: dict[str, Any] = {}
    what = args.what
    if args.throughput and what not in ("dyvm", "all"):
        raise ValueError(f"--throughput applies to --what dyvm (or all), not {what}")
    if args.compile and what not in ("dyvm", "all"):
        raise ValueError(f"--compile applies to --what dyvm (or all), not {what}")
    for flag, value, low in (("rounds", args.rounds, 1), ("repeats", args.repeats, 1), ("warmup", args.warmup, 0),
                             ("throughput-batch", args.throughput_batch, 1), ("train-batch", args.train_batch, 1),
                             ("precision", args.precision, 0),
                             ("max-rounds", args.max_rounds, 1)):
        if value is not None and value < low:
            raise ValueError(f"--{flag} must be >= {low}, got {value}")
    rounds = lambda default: args.rounds or default
    precision = args.precision or None  # 0: exactly --rounds
    if args.max_rounds is not None and precision is None:
        raise ValueError("--max-rounds needs --precision > 0 (with --precision 0 every comparison runs "
                         "--rounds rounds)")

    def max_rounds(default: int) -> Optional[int]:
        if args.max_rounds is not None and args.max_rounds < rounds(default):
            raise ValueError(f"--max-rounds {args.max_rounds} is below --rounds {rounds(default)}")
        return args.max_rounds

    warmup = 2 if args.warmup is None and what == "train-step" else 1 if args.warmup is None else args.warmup
    common = dict(repeats=args.repeats, warmup=warmup, progress=not args.no_progress, precision=precision)
    if what == "train-step":
        from .bench_train import bench_train_step

        batch = args.train_batch or (8 if args.step_model == "tiny" else 128)
        res = bench_train_step(args.against, rounds(7), args.steps, warmup, args.threads or 1, batch=batch,
                               kinds=args.kinds, autocast=args.autocast, against_autocast=args.against_autocast,
                               precision=precision, max_rounds=max_rounds(7), progress=not args.no_progress,
                               step_model=args.step_model)
        out["train_step"] = res
        print(f"\nTraining steps of {res['step_model']} (batch {batch}; "
              f"{machine_line(res['threads'], torch.device('cpu'))}), {rounds_text(res)} of {res['steps_per_round']} "
              f"steps, after {res['warmup']} warm-up steps;"
              " images/s are medians over rounds, ratios are medians of per-round ratios")
        print(res["table"])
    if what in ("backbone", "all"):
        res = bench_backbone(args.model, tuple(args.batch_sizes), args.backends, args.threads, args.device, rounds(5),
                             train_batch=args.train_batch or 8, dtype=args.dtype, max_rounds=max_rounds(5), **common)
        out["backbone"] = res
        print(f"\nVim backbone ({res['model']}, {args.dtype}, eval; {res['machine']}); default backend "
              f"{res['default_backend']}; {rounds_text(res['result'])}; ratios: median per-round time / the default's")
        print(res["table"])
        print("CPU time:\n" + res["table_cpu"])
        for k, v in res["summary"].items():
            print(f"  {k}: {v:.3f}")
        if res["cpp_cold_build_s"] is not None:
            print(f"  cpp first-use build: {res['cpp_cold_build_s']:.1f} s (cached afterwards)")
    if what in ("dyvm", "all"):
        batches = (args.throughput_batch or (256 if args.device.startswith("cuda") else 64),) if args.throughput \
            else tuple(args.batch_sizes)
        res = bench_dyvm(tuple(args.sizes), batches, args.threads, args.device, args.routers_on, rounds(15),
                         dtype=args.dtype, throughput=args.throughput, max_rounds=max_rounds(15),
                         compile=args.compile, **common)
        out["dyvm"] = res
        kind = "throughput, official style" if args.throughput else "latency"
        how = ("; both torch.compile'd" + (" with CUDA graphs" if args.device.startswith("cuda") else "")
               + ": DyVM's skipped branches are computed and masked, so its FLOPs cut is the token pruning's"
               if args.compile else "")
        print(f"\nDyVM vs Vim {kind} (random weights, {100 * args.routers_on:.0f}% of branches on, {args.dtype}{how}; "
              f"{res['machine']}); {rounds_text(res['result'])}; medians of per-round ratios")
        print(res["table"])
    if what == "dtype":
        res = bench_dtype((args.model,) if not args.checkpoint else (), tuple(args.checkpoint or ()),
                          tuple(args.batch_sizes), args.threads, args.device, rounds(15), max_rounds=max_rounds(15),
                          **common)
        out["dtype"] = res
        print(f"\nfp32 vs bf16 autocast inference ({res['machine']}); {rounds_text(res['result'])}; "
              "speedup = fp32 time / bf16 time, median per round")
        print(res["table"])
        print("CPU time:\n" + res["table_cpu"])
    if what == "peers":
        res = bench_peers(tuple(args.batch_sizes), args.threads, args.device, rounds(3), dtype=args.dtype,
                          max_rounds=max_rounds(3), **dict(common, repeats=args.repeats or 1))
        out["peers"] = res
        print(f"\nVim-T (24 layers, D 192, 197 tokens), {args.dtype} eval: dyvm vs mambapy vs dyvm's reference scan "
              f"({res['machine']}); {rounds_text(res['result'])}; ratio = time / dyvm's time, median per round")
        print(res["table"])
        print("CPU time:\n" + res["table_cpu"])
    for res in out.values():  # train-step's result is the interleave output itself
        note = spread_note(res.get("result", res))
        if note:
            print(note)
    if args.json:
        _write_json(args.json, out)
    return 0
