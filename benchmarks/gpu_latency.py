"""Where small-batch GPU inference time goes, and what CUDA graphs buy (a CUDA machine).

    python benchmarks/gpu_latency.py --out gpu_latency.json [--skip-compile]

1. Profile: Vim-T and DyVM-Vim-T (random weights, 80% of the branches on, as ``dyvm bench``),
   eval forward at batch 1, fp32, default backends (triton on CUDA): per forward, the host's
   wall time, the GPU's busy time (the sum of kernel times), the number of kernel launches,
   and the ops that take the most host time.
2. ``torch.compile(mode="reduce-overhead")`` (inductor, CUDA graphs) against eager, batch 1 and
   64, interleaved rounds (``dyvm.timing.interleave``), and the largest logit difference.
   Compiled DyVM computes a skipped branch and masks it (README: "Compile and export"), so its
   FLOPs saving is the token pruning's only.

Writes ``--out`` (JSON) after every step, so a run stopped at a time limit keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("vim_tiny", "dyvm_vim_tiny")


def build(name, device):
    from dyvm.bench import build_model

    return build_model(name, device, routers_on=0.8 if name.startswith("dyvm") else None).eval()


def images(batch, device, seed=0):
    import torch

    return torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed)).to(device)


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile(name, device, calls=10) -> dict:
    """Host time, GPU busy time and launches per batch-1 forward; the top host-time ops."""
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    model, x = build(name, device), images(1, device)
    with torch.no_grad():
        for _ in range(3):
            model(x)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            model(x)
        sync(device)
        wall = (time.perf_counter() - t0) / calls
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch_profile(activities=activities) as prof:
            for _ in range(calls):
                model(x)
            sync(device)
    events = prof.key_averages()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_us = sum(e.time_range.elapsed_us() for e in kernels) / calls
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    return dict(model=name, batch=1, wall_ms=1e3 * wall, gpu_busy_ms=gpu_us / 1e3,
                kernels_per_forward=len(kernels) / calls,
                top_host_ops=[dict(op=e.key, calls_per_forward=e.count / calls,
                                   self_host_ms_per_forward=e.self_cpu_time_total / 1e3 / calls) for e in top])


def compile_ab(name, batch, device, rounds) -> dict:
    """Eager vs torch.compile(mode="reduce-overhead"), interleaved; logits compared."""
    import torch

    from dyvm.bench import compiled as compile_model
    from dyvm.timing import interleave, timed

    model, x = build(name, device), images(batch, device)
    compiled = compile_model(model, device)  # mode "reduce-overhead" on CUDA, as dyvm bench --compile
    t0 = time.perf_counter()
    with torch.no_grad():
        want = model(x).clone()
        for _ in range(3):  # compile, record the graph, replay
            got = compiled(x).clone()
    compile_s = time.perf_counter() - t0

    def runner(fn):
        def call():
            with torch.no_grad():
                fn(x)
        return timed(call, device)

    res = interleave({"ab": {"eager": runner(model), "compiled": runner(compiled)}}, rounds=rounds, warmup=2)
    g = res["groups"]["ab"]
    return dict(model=name, batch=batch, compile_s=compile_s, max_logit_diff=(got - want).abs().max().item(),
                eager_ms=1e3 * g["arms"]["eager"]["seconds_summary"]["wall"]["median"],
                compiled_ms=1e3 * g["arms"]["compiled"]["seconds_summary"]["wall"]["median"],
                compiled_over_eager_time=g["ratios"]["compiled"]["wall"]["time_summary"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="gpu_latency.json")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="of the compile A/B")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--device", default="cuda", help="cpu only checks this script (default: %(default)s)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script measures GPU latency (--device cpu checks the script)")
    results = dict(time=time.strftime("%Y-%m-%d %H:%M:%S %Z"), device=str(device),
                   gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else "none",
                   torch=torch.__version__, profile=[], compile=[])

    def save():
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(args.out)

    print("## Batch-1 forward, fp32: host wall time vs GPU busy time\n\n"
          "| model | wall ms | GPU busy ms | kernels / forward |\n|---|---|---|---|", flush=True)
    for name in MODELS:
        try:
            r = profile(name, device)
            print(f"| {name} | {r['wall_ms']:.2f} | {r['gpu_busy_ms']:.2f} | {r['kernels_per_forward']:.0f} |",
                  flush=True)
        except Exception:
            r = dict(model=name, error=traceback.format_exc())
            print(f"| {name} | error: {r['error'].splitlines()[-1]} | | |", flush=True)
        results["profile"].append(r)
        save()
    for r in results["profile"]:
        if "top_host_ops" in r:
            print(f"\n{r['model']}: top host-time ops per forward\n\n| op | calls | self host ms |\n|---|---|---|")
            for op in r["top_host_ops"]:
                print(f"| {op['op']} | {op['calls_per_forward']:.0f} | {op['self_host_ms_per_forward']:.3f} |")
    if not args.skip_compile:
        print(f"\n## torch.compile(mode='reduce-overhead') vs eager, fp32 ({args.rounds} interleaved rounds)\n\n"
              "| model | batch | eager ms | compiled ms | compiled/eager time (median, IQR) | max logit diff | "
              "compile s |\n|---|---|---|---|---|---|---|", flush=True)
        for batch in args.batches:
            for name in MODELS:
                try:
                    r = compile_ab(name, batch, device, args.rounds)
                    t = r["compiled_over_eager_time"]
                    print(f"| {name} | {batch} | {r['eager_ms']:.2f} | {r['compiled_ms']:.2f} | {t['median']:.3f} "
                          f"({t['q1']:.3f}-{t['q3']:.3f}) | {r['max_logit_diff']:.1e} | {r['compile_s']:.0f} |",
                          flush=True)
                except Exception:
                    r = dict(model=name, batch=batch, error=traceback.format_exc())
                    print(f"| {name} | {batch} | error: {r['error'].splitlines()[-1][:150]} | | | | |", flush=True)
                results["compile"].append(r)
                save()
                torch._dynamo.reset()
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
