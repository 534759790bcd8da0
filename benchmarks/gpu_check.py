"""GPU check of the Triton backend: parity on CUDA, then a side-by-side benchmark.

    python benchmarks/gpu_check.py             # on a CUDA machine, as is (about 5-8 minutes)
    python benchmarks/gpu_check.py --dry-run   # CPU, Triton interpreter, tiny shapes (~1 min):
                                               # only checks that this script works

1. Kernel parity: ``selective_scan`` (forward and every gradient) and ``causal_conv1d`` with
   the Triton kernels on the device against the float64 reference on CPU, fp32 and bf16.
2. Oracle parity: the official implementation's test vectors (``tests/oracle``): Vim-S eval,
   DyVM eval, DyVM train with replayed noise (logits and every parameter gradient), with the
   ``triton`` and ``torch`` backends (and ``cuda`` = mamba_ssm when it imports).
3. The selective scan alone at Vim-T's shape per backend, and a sweep of the triton tiles.
4. Benchmark: Vim-T and DyVM-Vim-T, forward (eval, no grad) and training step (forward,
   backward, AdamW step at lr 0 so the weights and DyVM's routing stay put), batch 64 and
   256, bf16 autocast and fp32. The arms (scan backend + conv backend: triton+triton,
   torch+torch, cuda+auto; ``triton_32x4``: triton with the scan tiles before the H200 sweep;
   ``triton_flipped``: the backward branch's scan and conv on flipped copies, as before the
   kernels' own reverse)
   run in interleaved rounds A, B, C, A, B, C, ... after warm-up; the table gives each arm's
   median time and the median (min-max) of the per-round ratios.

Prints markdown tables, writes everything to ``--out`` (JSON) and exits 1 when a parity
check fails. Goals: triton >= 10x faster than torch on the training step, within 1.5x of
mamba_ssm.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORACLE = ROOT / "tests" / "oracle"

ARMS = {  # name: (scan backend, conv backend)
    "triton": ("triton", "triton"),
    "torch": ("torch", "torch"),
    "cuda": ("cuda", "auto"),
    "triton_32x4": ("triton", "triton"),     # the scan kernels' tiles before the H200 sweep of 2026-12-04
    # the backward branch's scan and conv on flipped copies (as before session 28)
    "triton_flipped": ("triton", "triton"),
}
# arms that change the triton backend: tiles (forward, backward) and whether it scans in reverse itself
ARM_VARIANTS = {"triton_32x4": dict(tiles=((32, 4), (32, 4))), "triton_flipped": dict(reverse_native=False)}


@contextlib.contextmanager
def arm_variant(arm, tiles=None):
    """The triton backend as ``arm`` has it (ARM_VARIANTS), or with the scan ``tiles`` (forward,
    backward) given, restored afterwards."""
    from dyvm.kernels import conv_triton, scan_triton
    from dyvm.kernels import scan as scan_mod

    default, native = (scan_triton.FWD_TILE_CUDA, scan_triton.BWD_TILE_CUDA), set(scan_mod._REVERSE_NATIVE)
    conv = conv_triton.causal_conv1d_triton
    variant = ARM_VARIANTS.get(arm, {})
    scan_triton.FWD_TILE_CUDA, scan_triton.BWD_TILE_CUDA = tiles or variant.get("tiles", default)
    if not variant.get("reverse_native", True):
        scan_mod._REVERSE_NATIVE.discard("triton")

        def conv_on_flipped_copies(x, weight, bias=None, silu=True, reverse=False):
            return conv(x.flip(-1), weight, bias, silu).flip(-1) if reverse else conv(x, weight, bias, silu)

        conv_triton.causal_conv1d_triton = conv_on_flipped_copies
    try:
        yield
    finally:
        scan_triton.FWD_TILE_CUDA, scan_triton.BWD_TILE_CUDA = default
        scan_mod._REVERSE_NATIVE.clear()
        scan_mod._REVERSE_NATIVE.update(native)
        conv_triton.causal_conv1d_triton = conv
TINY = {"vim_tiny": dict(img_size=16, patch_size=8, depth=2, embed_dim=16, num_classes=10),  # --dry-run
        "dyvm_vim_tiny": dict(img_size=32, patch_size=8, depth=2, embed_dim=16, num_classes=10,
                              pruning_loc=[1], token_ratio=[0.5])}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, Triton interpreter, tiny shapes: checks the script, measures nothing")
    p.add_argument("--out", default="gpu_check.json", help="JSON results (default: %(default)s)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="default 64 256 (dry run: 2)")
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    p.add_argument("--models", nargs="+", default=["vim_tiny", "dyvm_vim_tiny"])
    p.add_argument("--modes", nargs="+", default=["forward", "train"], choices=["forward", "train"])
    p.add_argument("--arms", nargs="+", default=None, choices=list(ARMS),
                   help="default: triton torch, and cuda when mamba_ssm imports "
                        "(triton_32x4, triton_flipped: on request)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per cell (default 5; dry run 1)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per arm and cell first (dry run 0)")
    p.add_argument("--skip-parity", action="store_true")
    p.add_argument("--skip-bench", action="store_true")
    p.add_argument("--skip-kernel-bench", action="store_true")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- parity


def max_err(a, b) -> float:
    return (a.detach().double().cpu() - b.detach().double().cpu()).abs().max().item() if a.numel() else 0.0


def close(a, b, rtol, atol) -> bool:
    import torch

    return bool(torch.allclose(a.detach().double().cpu(), b.detach().double().cpu(), rtol=rtol, atol=atol))


def kernel_parity(device, dry_run: bool) -> list[dict]:
    """Triton scan and conv on ``device`` against float64 references on CPU."""
    import torch
    import torch.nn.functional as F

    from dyvm.kernels.conv_triton import causal_conv1d_triton
    from dyvm.kernels.scan import selective_scan_reference
    from dyvm.kernels.scan_triton import selective_scan_triton

    rows = []
    # Vim-T's shape (E = 384, L = 197), a few images; the dry run: tiny
    b, e, l, n = (2, 6, 20, 16) if dry_run else (3, 384, 197, 16)
    g = torch.Generator().manual_seed(0)

    def rnd(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, dtype=torch.float64)

    base = dict(u=rnd(b, e, l), delta=rnd(b, e, l, scale=0.5), A=-torch.exp(torch.rand(e, n, generator=g).double()),
                B=rnd(b, n, l), C=rnd(b, n, l), D=rnd(e), z=rnd(b, e, l), delta_bias=rnd(e, scale=0.5) - 0.5)
    names = list(base)
    grad_out = rnd(b, e, l)
    ref_leaves = {k: v.clone().requires_grad_() for k, v in base.items()}
    ref_out = selective_scan_reference(*ref_leaves.values(), delta_softplus=True)
    ref_grads = torch.autograd.grad(ref_out, list(ref_leaves.values()), grad_out)
    for dtype, tol in ((torch.float32, (1e-5, 1e-4)), (torch.bfloat16, (3e-2, 5e-2))):
        low = {"u", "delta", "B", "C", "z"} if dtype == torch.bfloat16 else set(names)  # autocast-like
        leaves = {k: v.to(device, dtype if k in low else torch.float32).requires_grad_() for k, v in base.items()}
        out = selective_scan_triton(*leaves.values(), delta_softplus=True)
        grads = torch.autograd.grad(out, list(leaves.values()), grad_out.to(device, out.dtype))
        out_tol, grad_tol = tol
        scale = ref_out.abs().max().item()
        row = {"check": f"scan {str(dtype)[6:]}", "out_rel_err": max_err(out, ref_out) / scale}
        ok = row["out_rel_err"] < out_tol
        for k, gr, rg in zip(names, grads, ref_grads):
            row[f"d{k}_rel_err"] = max_err(gr, rg) / max(rg.abs().max().item(), 1e-30)
            ok &= row[f"d{k}_rel_err"] < grad_tol and gr.dtype == leaves[k].dtype
        row["ok"] = bool(ok)
        rows.append(row)

    x = rnd(b, l, 2 * e).transpose(1, 2)[:, e:]          # the mixer's strided view
    w, bias = rnd(e, 1, 4, scale=0.5), rnd(e, scale=0.3)
    gx = rnd(b, e, l)
    ref_leaves = [t.clone().requires_grad_() for t in (x, w, bias)]
    ref = F.silu(F.conv1d(ref_leaves[0], ref_leaves[1], ref_leaves[2], padding=3, groups=e)[..., :l])
    ref_grads = torch.autograd.grad(ref, ref_leaves, gx)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 3e-2)):
        leaves = [x.to(device, dtype).requires_grad_(), w.to(device, torch.float32).requires_grad_(),
                  bias.to(device, torch.float32).requires_grad_()]
        out = causal_conv1d_triton(*leaves)
        grads = torch.autograd.grad(out, leaves, gx.to(device, out.dtype))
        row = {"check": f"conv {str(dtype)[6:]}", "out_rel_err": max_err(out, ref) / ref.abs().max().item()}
        for k, gr, rg in zip(("x", "w", "b"), grads, ref_grads):
            row[f"d{k}_rel_err"] = max_err(gr, rg) / rg.abs().max().item()
        row["ok"] = all(v < tol for k, v in row.items() if k.endswith("rel_err"))
        rows.append(row)
    return rows


def _load(name):
    import torch

    return torch.load(ORACLE / f"{name}.pt", weights_only=True)


def oracle_parity(device, arm: str) -> list[dict]:
    """The oracle tests of tests/test_vim.py and tests/test_dyvm.py, on ``device``."""
    import torch

    import dyvm

    scan_backend, conv_backend = ARMS[arm]
    os.environ["DYVM_CONV_BACKEND"] = conv_backend
    rows = []

    def record(check, errs, ok):
        rows.append({"check": f"oracle {check}", "arm": arm, **{k: float(v) for k, v in errs.items()}, "ok": bool(ok)})

    o = _load("vim_small")
    model = dyvm.create_model("vim_small", **o["config"]).eval()
    model.load_state_dict(o["state_dict"])
    model.to(device).set_scan_backend(scan_backend)
    with torch.no_grad():
        out = model.forward_detailed(o["input"].to(device), return_layers=True)
    # states and features (the other tokens): the oracle README's atol 1e-4, since fp32 matmuls sum in a
    # device-dependent order (on an H200 the tokens came 1.01e-5 off with both scan backends, over the
    # CPU tests' tighter 1e-5); logits: the CPU tests' 1e-5, inside the README's 2e-5
    layers_ok = all(close(out.layer_hidden[i], o["layer_hidden"][i], 1e-5, 1e-4)
                    and close(out.layer_residual[i], o["layer_residual"][i], 1e-5, 1e-4) for i in range(4))
    errs = {"logits": max_err(out.logits, o["logits"]), "tokens": max_err(out.tokens, o["other_tokens"]),
            "states": max(max_err(out.layer_hidden[i], o["layer_hidden"][i]) for i in range(4))}
    record("vim_small eval", errs, errs["logits"] < 1e-5 and errs["tokens"] < 1e-4 and layers_ok)

    e = _load("dyvm_small_eval")
    model = dyvm.create_model("dyvm_vim_small", **e["config"]).eval()
    model.load_state_dict(e["state_dict"])
    model.to(device).set_scan_backend(scan_backend)
    with torch.no_grad():
        out = model.forward_inference(e["input"].to(device), return_layers=True)
    errs = {"logits": max_err(out.logits, e["logits"])}
    same = (torch.equal(out.gates.cpu(), e["block_policy"].squeeze(2))
            and all(torch.equal(a.cpu(), b) for a, b in zip(out.keep_indices, e["keep_idx_orig"])))
    record("dyvm_small eval", errs, errs["logits"] < 1e-5 and same)

    t = _load("dyvm_small_train")
    model = dyvm.create_model("dyvm_vim_small", **t["config"])
    model.load_state_dict(t["state_dict"])
    model.to(device).set_scan_backend(scan_backend).train()
    draws = []
    for i in range(t["config"]["depth"]):  # the official draw order (tests/test_dyvm.py:replay_noise)
        if i in t["config"]["pruning_loc"]:
            draws.append(t["token_exp_noise"][t["config"]["pruning_loc"].index(i)])
        draws += [t["block_exp_noise1"][i], t["block_exp_noise2"][i]]
    it = iter(draws)
    out = model(t["input"].to(device), noise=lambda shape, dev: next(it).reshape(shape).to(dev))
    loss = out.logits.square().mean() + sum(d.mean() for d in out.decisions) + out.gates.mean()
    loss.backward()
    grads_ok = all(close(p.grad, t["grads"][name], 1e-4, 1e-5) for name, p in model.named_parameters())
    errs = {"logits": max_err(out.logits, t["logits"]), "loss": abs(loss.item() - t["grad_loss"].item()),
            "grad_max_abs_err": max(max_err(p.grad, t["grads"][n]) for n, p in model.named_parameters())}
    record("dyvm_small train+grads", errs, errs["logits"] < 1e-5 and errs["loss"] < 1e-5 and grads_ok)
    return rows


# ----------------------------------------------------------------------------- benchmark


# (BLOCK_E, num_warps) of the triton scan. With one warp the backward's per-step sums over the
# channels (dB, dC) stay within the warp, with more they cross warps through shared memory.
SWEEP = [(32, 4), (16, 2), (32, 2), (64, 4), (8, 1), (16, 1), (4, 1), (32, 1)]


def kernel_bench(args, device, arms, dry_run) -> list[dict]:
    """The selective scan alone at Vim-T's shape (E 384, L 197, N 16): forward and forward +
    backward per backend, and the triton kernel's tile sweep (to tune BLOCK_E / num_warps)."""
    import torch

    from dyvm.kernels import scan_triton
    from dyvm.kernels.scan import selective_scan

    e, l, n = (8, 20, 16) if dry_run else (384, 197, 16)
    reps = 1 if dry_run else 10
    rows = []
    default = (scan_triton.FWD_TILE_CUDA, scan_triton.BWD_TILE_CUDA)
    for batch in args.batches:
        for dtype in args.dtypes:
            low = torch.bfloat16 if dtype == "bf16" else torch.float32
            g = torch.Generator().manual_seed(0)
            mk = lambda *shape, dt=low: torch.randn(*shape, generator=g).to(device, dt)  # noqa: E731
            ins = [mk(batch, e, l), 0.5 * mk(batch, e, l), -torch.rand(e, n, generator=g).to(device) - 0.5,
                   mk(batch, n, l), mk(batch, n, l), mk(e, dt=torch.float32), mk(batch, e, l),
                   mk(e, dt=torch.float32)]
            # the sweep gives both kernels the same tile: forward_ms ranks the forward's tiles,
            # fwd_bwd_ms - forward_ms the backward's
            variants = [(a, None) for a in arms if a not in ARM_VARIANTS] + (
                [("triton", t) for t in SWEEP] if not dry_run else [])
            for arm, tile in variants:
                leaves = [t.detach().requires_grad_() for t in ins]
                res = {"batch": batch, "dtype": dtype, "backend": arm,
                       "tile": ([list(tile)] * 2 if tile else [list(t) for t in default]) if arm == "triton" else None}
                try:
                    for label, grad in (("forward_ms", False), ("fwd_bwd_ms", True)):
                        def call():
                            with torch.set_grad_enabled(grad):
                                out = selective_scan(*(leaves if grad else ins), backend=arm)
                            if grad:
                                out.backward(torch.ones_like(out))
                        with arm_variant(arm, tiles=(tile, tile) if tile else None):
                            call()  # warm-up (and compile)
                            times = []
                            for _ in range(reps):
                                sync(device)
                                t0 = time.perf_counter()
                                call()
                                sync(device)
                                times.append(time.perf_counter() - t0)
                        res[label] = statistics.median(times) * 1e3
                except Exception as exc:
                    res["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                rows.append(res)
                nan = float("nan")
                print(f"| {batch} | {dtype} | {arm} | {res['tile'] or ''} | {res.get('forward_ms', nan):.3f} | "
                      f"{res.get('fwd_bwd_ms', nan):.3f} | {res.get('error', '')} |", flush=True)
    tiles = [r for r in rows if r["backend"] == "triton" and "fwd_bwd_ms" in r and r["tile"][0] == r["tile"][1]]
    for batch in args.batches:
        for dtype in args.dtypes:
            cell = [r for r in tiles if r["batch"] == batch and r["dtype"] == dtype]
            if len(cell) > 1:
                fwd = min(cell, key=lambda r: r["forward_ms"])
                bwd = min(cell, key=lambda r: r["fwd_bwd_ms"] - r["forward_ms"])
                print(f"- batch {batch} {dtype}: fastest forward tile {tuple(fwd['tile'][0])} "
                      f"({fwd['forward_ms']:.3f} ms), backward tile {tuple(bwd['tile'][0])} "
                      f"({bwd['fwd_bwd_ms'] - bwd['forward_ms']:.3f} ms); defaults {default}")
    return rows


def make_step(model, mode: str, dtype: str, images, labels, device):
    """A closure running one forward (no grad) or training step of ``model``."""
    import torch
    import torch.nn.functional as F

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    if mode == "forward":
        model.eval()

        def step():
            with torch.no_grad(), autocast:
                out = model(images)
            return out

        return step
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            out = model(images)
        if isinstance(out, torch.Tensor):
            loss = F.cross_entropy(out.float(), labels)
        else:  # DyVM's training output: logits plus the pruning / routing terms
            loss = (F.cross_entropy(out.logits.float(), labels) + sum(d.float().mean() for d in out.decisions)
                    + out.gates.float().mean())
        loss.backward()
        opt.step()
        return loss

    return step


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_arm(model, arm, step, device):
    scan_backend, conv_backend = ARMS[arm]
    os.environ["DYVM_CONV_BACKEND"] = conv_backend
    model.set_scan_backend(scan_backend)
    with arm_variant(arm):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        return time.perf_counter() - t0


def bench_cell(model, arms, step, device, warmup, rounds) -> dict:
    import torch

    times = {a: [] for a in arms}
    errors = {}
    peak = {}

    def failed(a, exc):  # an OOM or a missing kernel: reported in the table, the other arms go on
        errors[a] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        if device.type == "cuda":
            torch.cuda.empty_cache()

    for a in arms:
        try:
            for _ in range(warmup):
                run_arm(model, a, step, device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                run_arm(model, a, step, device)
                peak[a] = torch.cuda.max_memory_allocated(device) / 2**20
        except Exception as exc:
            failed(a, exc)
    for _ in range(rounds):
        for a in arms:
            if a in errors:
                continue
            try:
                times[a].append(run_arm(model, a, step, device))
            except Exception as exc:
                failed(a, exc)
    live = [a for a in arms if a not in errors]
    res = {"times_s": times, "errors": errors, "peak_mib": peak}
    res["median_ms"] = {a: statistics.median(times[a]) * 1e3 for a in live}
    if "triton" in live:
        res["ratio_vs_triton"] = {}
        for a in live:
            if a == "triton":
                continue
            ratios = [x / y for x, y in zip(times[a], times["triton"])]
            res["ratio_vs_triton"][a] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return res


def benchmark(args, device, arms, dry_run, rows: list, on_row=lambda: None) -> list[dict]:
    """Appends one row per (model, batch, mode, dtype) cell to ``rows``, calling ``on_row`` after each."""
    import torch

    import dyvm

    for name in args.models:
        torch.manual_seed(0)
        model = dyvm.create_model(name, **(TINY.get(name, {}) if dry_run else {})).to(device)
        size = model.img_size if isinstance(model.img_size, int) else model.img_size[0]
        for batch in args.batches:
            g = torch.Generator().manual_seed(batch)
            images = torch.randn(batch, 3, size, size, generator=g).to(device)
            labels = torch.randint(0, model.num_classes, (batch,), generator=g).to(device)
            for mode in args.modes:
                for dtype in args.dtypes:
                    step = make_step(model, mode, dtype, images, labels, device)
                    t0 = time.perf_counter()
                    res = bench_cell(model, arms, step, device, args.warmup, args.rounds)
                    row = dict(model=name, mode=mode, dtype=dtype, batch=batch, seconds=time.perf_counter() - t0, **res)
                    rows.append(row)
                    print(table_line(row, arms), flush=True)
                    on_row()
                    del step
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
        del model
    return rows


def table_header(arms) -> str:
    cols = ["model", "mode", "dtype", "batch"] + [f"{a} ms" for a in arms]
    cols += [f"{a}/triton" for a in arms if a != "triton"] + ["peak MiB (triton)"]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def table_line(row, arms) -> str:
    cells = [row["model"], row["mode"], row["dtype"], str(row["batch"])]
    for a in arms:
        cells.append(f"{row['median_ms'][a]:.2f}" if a in row["median_ms"]
                     else f"error: {row['errors'].get(a, '')[:40]}")
    for a in arms:
        if a == "triton":
            continue
        r = row.get("ratio_vs_triton", {}).get(a)
        cells.append(f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})" if r else "-")
    cells.append(f"{row['peak_mib']['triton']:.0f}" if "triton" in row["peak_mib"] else "-")
    return "| " + " | ".join(cells) + " |"


def goals(rows) -> list[str]:
    lines = []
    for r in rows:
        if r["mode"] != "train" or "ratio_vs_triton" not in r:
            continue
        key = f"{r['model']} train {r['dtype']} b{r['batch']}"
        vs = r["ratio_vs_triton"]
        if "torch" in vs:
            lines.append(f"{key}: triton {vs['torch']['median']:.1f}x faster than torch "
                         f"({'meets' if vs['torch']['median'] >= 10 else 'misses'} the 10x goal)")
        if "cuda" in vs:
            slower = 1 / vs["cuda"]["median"]
            lines.append(f"{key}: triton takes {slower:.2f}x mamba_ssm's time "
                         f"({'meets' if slower <= 1.5 else 'misses'} the 1.5x goal)")
    return lines


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        if "triton" in sys.modules:
            raise SystemExit("--dry-run must set TRITON_INTERPRET before triton is imported")
        os.environ["TRITON_INTERPRET"] = "1"
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    import dyvm
    from dyvm.kernels import scan_cuda, triton_util
    from dyvm.kernels.scan_cuda import causal_conv1d_cuda

    if args.dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # tiny shapes: threads only add contention
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run on a GPU machine, or pass --dry-run to check the script on CPU")
        device = torch.device("cuda")
    if not triton_util.available():
        raise SystemExit(f"triton does not import: {triton_util.import_error()}")
    import triton

    args.batches = args.batches or ([2] if args.dry_run else [64, 256])
    args.rounds = args.rounds or (1 if args.dry_run else 5)
    if args.dry_run:  # interpreted kernels take seconds a call: each code path once
        args.warmup = 0
    arms = args.arms or (["triton", "torch"] + (["cuda"] if scan_cuda.available() else []))
    env = dict(time=time.strftime("%Y-%m-%d %H:%M:%S %Z"), dry_run=args.dry_run, device=str(device),
               gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
               torch=torch.__version__, triton=triton.__version__, dyvm=dyvm.__version__,
               mamba_ssm=scan_cuda.available(), causal_conv1d_package=causal_conv1d_cuda() is not None,
               tf32_matmul=torch.backends.cuda.matmul.allow_tf32, arms={a: ARMS[a] for a in arms})
    print("# GPU check" + (" (DRY RUN: CPU, Triton interpreter, tiny shapes; no speed measured)"
                           if args.dry_run else ""))
    print(json.dumps(env, indent=1))
    results = {"env": env, "parity": [], "kernel_bench": [], "bench": [], "goals": []}
    failed = False

    def save():  # after every section, so a run stopped at a time limit keeps what it measured
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(args.out)

    if not args.skip_parity:
        cudnn_tf32 = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False  # the patch embedding conv at full fp32, like the oracle
        try:
            rows = kernel_parity(device, args.dry_run)
            # dry run: the oracle code path once (torch arm; the triton one is in tests/test_triton.py)
            for arm in (["torch"] if args.dry_run else arms):
                try:
                    with arm_variant(arm):
                        rows += oracle_parity(device, arm)
                except Exception:
                    rows.append({"check": "oracle", "arm": arm, "ok": False, "error": traceback.format_exc()})
        finally:
            torch.backends.cudnn.allow_tf32 = cudnn_tf32
        results["parity"] = rows
        print("\n## Parity\n\n| check | arm | max errors | ok |\n|---|---|---|---|")
        for r in rows:
            errs = ", ".join(f"{k} {v:.1e}" for k, v in r.items() if isinstance(v, float))
            print(f"| {r['check']} | {r.get('arm', 'triton')} | {errs or r.get('error', '')[-300:]} | "
                  f"{'yes' if r['ok'] else 'NO'} |")
        failed = not all(r["ok"] for r in rows)
        save()

    if not args.skip_kernel_bench:
        print(f"\n## Selective scan alone (Vim-T shape; median of {1 if args.dry_run else 10} calls)\n\n"
              "| batch | dtype | backend | tile (BLOCK_E, warps) | forward ms | fwd+bwd ms | error |\n"
              "|---|---|---|---|---|---|---|", flush=True)
        results["kernel_bench"] = kernel_bench(args, device, arms, args.dry_run)
        save()

    if not args.skip_bench:
        print(f"\n## Benchmark ({args.rounds} interleaved rounds after {args.warmup} warm-up calls per arm; "
              "ratio = arm time / triton time, median (min-max) over rounds)\n")
        print(table_header(arms), flush=True)
        benchmark(args, device, arms, args.dry_run, rows=results["bench"], on_row=save)
        results["goals"] = [] if args.dry_run else goals(results["bench"])
        if results["goals"]:
            print("\n" + "\n".join("- " + g for g in results["goals"]))

    save()
    print(f"\nwrote {args.out}" + ("; PARITY FAILED" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
