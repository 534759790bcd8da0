"""Benchmarks (not tests): ``dyvm bench``. Prints tables; each number is a median over repeats.

``train-step``: the demo's DyVM and Vim training steps, this build against another checkout
(interleaved rounds in two worker processes; :mod:`dyvm.bench_train`).

``backbone``: Vim latency per scan backend at batch 1 and 8, the same forward with the scan
replaced by a zero-cost stub (the "matmul floor"), a training step (forward+backward), peak
memory, and the first-use build time of the compiled scan.
``dyvm``: DyVM vs Vim latency (random weights, routers set so that about 80% of branches run)
next to the FLOPs ratio: are the savings real?
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

import torch

from .utils import cpu_name, format_table, time_call

DEFAULT_BACKENDS = ("reference", "torch", "cpp", "cuda")


def stub_scan():
    """Replace the selective scan by a zero-cost stub (returns its input) inside the models."""
    from .models import vim

    original = vim.selective_scan
    vim.selective_scan = lambda u, *args, **kwargs: u
    try:
        yield
    finally:
        vim.selective_scan = original


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _row_worker(spec: dict, queue) -> None:
    """Runs one measurement in a fresh process, so its peak memory is its own."""
    try:
        queue.put(_measure(spec))
    except Exception as exc:  # reported in the table, not raised
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _measure(spec: dict) -> dict:
    from .models import create_model

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    model = create_model(spec["model"], **spec.get("overrides", {})).to(device)
    if spec.get("routers_on") is not None:
        set_router_pattern(model, spec["routers_on"])
    if spec.get("backend"):
        model.set_scan_backend(spec["backend"])
    x = torch.randn(spec["batch"], model.in_chans, model.img_size, model.img_size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = _peak_mib(device)
    if spec["mode"] == "train":
        model.train()

        def step():
            out = model(x)
            logits = out if torch.is_tensor(out) else out.logits
            logits.float().sum().backward()
            model.zero_grad(set_to_none=True)
    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(x)
    ctx = stub_scan() if spec.get("stub") else contextlib.nullcontext()
    with ctx:
        times = time_call(step, device, spec["repeats"], warmup=spec.get("warmup", 2))
    peak = _peak_mib(device) - (0 if device.type == "cuda" else base)
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
            "max_ms": 1e3 * max(times), "peak_mib": peak}


def run_isolated(spec: dict, isolate: bool = True) -> dict:
    if not isolate:
        return _measure(spec)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_row_worker, args=(spec, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


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
    return (f"{time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} cores, torch threads {threads}{gpu}, "
            f"torch {torch.__version__}")


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


def bench_backbone(model: str = "vim_tiny", batch_sizes=(1, 8), backends=None, threads: Optional[int] = None,
                   repeats: int = 10, device: str = "cpu", isolate: bool = True, reference_repeats: int = 2,
                   train_batch: int = 8, progress: bool = True) -> dict:
    """Latency table of the Vim backbone per scan backend (see module docstring)."""
    from .kernels.scan import resolve_backend

    threads = threads or os.cpu_count() or 1
    dev = torch.device(device)
    backends = available_backends(dev, backends or DEFAULT_BACKENDS)
    default = resolve_backend(None, dev)
    specs = []
    for backend in backends:
        for b in batch_sizes:
            specs.append(("eval", backend, b, dict(mode="eval", backend=backend, batch=b,
                                                    repeats=reference_repeats if backend == "reference" else repeats,
                                                    warmup=1 if backend == "reference" else 2)))
    for b in batch_sizes:
        specs.append(("eval", "matmul floor (scan stubbed)", b, dict(mode="eval", backend=default, batch=b,
                                                                     repeats=repeats, stub=True)))
    specs.append(("train step", default, train_batch, dict(mode="train", backend=default, batch=train_batch,
                                                         repeats=max(3, repeats // 2))))
    rows, results = [], []
    iterator = specs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(specs, desc="bench", unit="row", file=sys.stderr)
    for kind, label, b, spec in iterator:
        spec.update(model=model, threads=threads, device=device)
        res = run_isolated(spec, isolate)
        results.append(dict(kind=kind, backend=label, batch=b, **res))
        if "error" in res:
            rows.append([kind, label, b, "error", "", "", res["error"][:60]])
        else:
            rows.append([kind, label, b, res["median_ms"], b / res["median_ms"] * 1e3, res["peak_mib"], ""])
    summary = {}
    by = {(r["kind"], r["backend"], r["batch"]): r for r in results if "error" not in r}
    for b in batch_sizes:
        total = by.get(("eval", default, b))
        floor = by.get(("eval", "matmul floor (scan stubbed)", b))
        ref = by.get(("eval", "reference", b))
        if total and floor:
            summary[f"scan_share_b{b}"] = max(0.0, 1 - floor["median_ms"] / total["median_ms"])
        if total and ref:
            summary[f"speedup_vs_reference_b{b}"] = ref["median_ms"] / total["median_ms"]
            if floor and total["median_ms"] > floor["median_ms"]:  # the scans alone: total minus the floor
                summary[f"scan_only_speedup_vs_reference_b{b}"] = ((ref["median_ms"] - floor["median_ms"])
                                                                   / (total["median_ms"] - floor["median_ms"]))
    from .kernels import scan_cpp

    build = cold_build_seconds() if "cpp" in backends else None
    table = format_table(["what", "scan backend", "batch", "median ms", "img/s", "peak MiB", "note"], rows)
    return dict(model=model, device=device, threads=threads, default_backend=default, rows=results,
                summary=summary, cpp_cold_build_s=build, cpp_load_s=scan_cpp.build_seconds(),
                machine=machine_line(threads, dev), table=table)


def bench_dyvm(sizes=("tiny", "small"), batch_sizes=(1, 8), threads: Optional[int] = None, repeats: int = 10,
               device: str = "cpu", routers_on: float = 0.8, isolate: bool = True, progress: bool = True) -> dict:
    """DyVM vs Vim latency next to the FLOPs reduction (official and full conventions)."""
    from .models import create_model
    from .flops import count_flops

    threads = threads or os.cpu_count() or 1
    dev = torch.device(device)
    rows, results = [], []
    jobs = [(s, b) for s in sizes for b in batch_sizes]
    iterator = jobs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(jobs, desc="bench dyvm", unit="row", file=sys.stderr)
    for size, b in iterator:
        common = dict(batch=b, repeats=repeats, threads=threads, device=device, mode="eval")
        vim = run_isolated(dict(common, model=f"vim_{size}"), isolate)
        dy = run_isolated(dict(common, model=f"dyvm_vim_{size}", routers_on=routers_on), isolate)
        model = create_model(f"dyvm_vim_{size}")
        realised = set_router_pattern(model, routers_on)
        teacher = create_model(f"vim_{size}")
        f_off = 1 - count_flops(model, "official", branch_keep_ratio=realised) / count_flops(teacher, "official")
        f_full = 1 - count_flops(model, "full", branch_keep_ratio=realised) / count_flops(teacher, "full")
        if "error" in vim or "error" in dy:
            rows.append([size, b, "error", "", "", "", "", (vim.get("error") or dy.get("error"))[:60]])
            continue
        lat = 1 - dy["median_ms"] / vim["median_ms"]
        results.append(dict(size=size, batch=b, vim_ms=vim["median_ms"], dyvm_ms=dy["median_ms"],
                            latency_reduction=lat, flops_reduction_official=f_off, flops_reduction_full=f_full,
                            branch_keep=realised, goal_met=lat >= 0.9 * f_full))
        rows.append([f"vim_{size}", b, vim["median_ms"], dy["median_ms"], f"{100 * lat:.1f}%",
                     f"{100 * f_off:.1f}%", f"{100 * f_full:.1f}%", f"{lat / f_full:.2f}"])
    table = format_table(["model", "batch", "Vim ms", "DyVM ms", "latency cut", "FLOPs cut (official)",
                        "FLOPs cut (full)", "latency/FLOPs cut"], rows)
    return dict(rows=results, table=table, threads=threads, routers_on=routers_on, machine=machine_line(threads, dev))


def main(args) -> int:
    """Entry of ``dyvm bench`` (args from the CLI)."""
    out: dict[str, Any] = {}
    what = args.what
    if what == "train-step":
        from .bench_train import bench_train_step

        res = bench_train_step(args.against, args.rounds, args.steps, args.warmup, args.threads or 1,
                               kinds=args.kinds, autocast=args.autocast, against_autocast=args.against_autocast)
        out["train_step"] = res
        print(f"\nTraining steps of the demo configuration (batch 128; {machine_line(res['threads'], torch.device('cpu'))}),"
              f" {res['rounds']} interleaved rounds of {res['steps_per_round']} steps, after {res['warmup']} warm-up steps;"
              " images/s are medians over rounds, ratios are medians of per-round ratios")
        print(res["table"])
    if what in ("backbone", "all"):
        res = bench_backbone(args.model, tuple(args.batch_sizes), args.backends, args.threads, args.repeats,
                             args.device, not args.no_isolate, train_batch=args.train_batch)
        out["backbone"] = res
        print(f"\nVim backbone ({res['model']}, fp32, eval; {res['machine']}); default backend: "
              f"{res['default_backend']}")
        print(res["table"])
        for k, v in res["summary"].items():
            print(f"  {k}: {v:.3f}")
        if res["cpp_cold_build_s"] is not None:
            print(f"  cpp first-use build: {res['cpp_cold_build_s']:.1f} s (cached afterwards)")
    if what in ("dyvm", "all"):
        res = bench_dyvm(tuple(args.sizes), tuple(args.batch_sizes), args.threads, args.repeats, args.device,
                         args.routers_on, not args.no_isolate)
        out["dyvm"] = res
        print(f"\nDyVM vs Vim (random weights, {100 * args.routers_on:.0f}% of branches on; {res['machine']})")
        print(res["table"])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({k: {kk: vv for kk, vv in v.items() if kk != "table"} for k, v in out.items()}, fh, indent=2)
    return 0
