"""``dyvm bench --what train-step``: training-step throughput of this build against another one.

Two persistent worker processes, one per build, each importing its own ``dyvm`` (through
``PYTHONPATH``) and holding the demo's two training steps (batch 128, 28x28x1 images, depth 8,
D=64, 10 classes):

- ``dyvm``: DyVM fine-tuning step (pruning at layers 2, 4, 6, ρ = 0.7, β = 0.8), loss
  ``DyVMLoss.for_model(model, CrossEntropyLoss(), teacher)`` with a frozen Vim teacher, AdamW;
- ``vim``: the Vim teacher's own step (CE, AdamW).

After warm-up the driver runs the builds round by round, alternating which goes first
(A B, B A, A B, ...), so slow drifts of the machine's load hit both alike. Each round times
``steps`` steps per build and kind; the reported ratio is the median over rounds of the per-round
speed ratio A/B (with min-max and quartiles), from wall-clock time and from the worker's CPU time
(user + system of its process; with one thread and a machine shared with other jobs the CPU
time is the steadier of the two, as it does not count the time the process waits for a core).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

KINDS = ("dyvm", "vim")
KIND_LABELS = {"dyvm": "DyVM fine-tuning step", "vim": "Vim teacher step"}
WORKER_SOURCE = Path(__file__).resolve().parent / "_train_step_worker.py"


class WorkerError(RuntimeError):
    pass


class Worker:
    """A persistent worker process for the build whose ``src`` folder is ``src``."""

    def __init__(self, src: str, label: str, threads: int = 1, batch: int = 128, seed: int = 0,
                 autocast: bool = False, python: Optional[str] = None):
        self.label, self.src = label, str(Path(src).resolve())
        env = dict(os.environ, PYTHONPATH=self.src, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self._cwd = tempfile.mkdtemp(prefix="dyvm-bench-")  # nothing importable next to the worker
        self.proc = subprocess.Popen([python or sys.executable, "-c", WORKER_SOURCE.read_text()], cwd=self._cwd,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self.request({"cmd": "setup", "threads": threads, "batch": batch, "seed": seed,
                                  "autocast": autocast})
        got = str(Path(self.info["dyvm_file"]).resolve())
        if not got.startswith(self.src + os.sep):
            self.close()
            raise WorkerError(f"worker {label}: imported dyvm from {got}, not from {self.src}")

    def request(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"worker {self.label} ({self.src}) exited (code {self.proc.wait()})")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise WorkerError(f"worker {self.label}: {reply.get('error')}\n{reply.get('trace', '')}")
        return reply

    def run(self, kind: str, steps: int) -> dict:
        return self.request({"cmd": "run", "kind": kind, "steps": steps})

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        try:
            os.rmdir(self._cwd)
        except OSError:
            pass


def summarize(values: Sequence[float]) -> dict:
    """Median, min, max and quartiles (inclusive method) of a non-empty sequence."""
    vals = sorted(values)
    if len(vals) >= 2:
        q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
    else:
        q1 = q3 = vals[0]
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1], "q1": q1, "q3": q3, "n": len(vals)}


def interleave(workers: dict[str, Any], kinds: Sequence[str], rounds: int, steps: int, warmup: int,
               batch: int, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Drive ``workers`` {"A": w, "B": w} (objects with ``run(kind, steps) -> {"wall", "cpu"}``).

    Warm-up: ``warmup`` steps of every kind on each worker (not timed). Then ``rounds`` rounds;
    in round r the order of the builds is A, B for even r and B, A for odd r, for every kind.
    Returns per kind: the per-round images/s of each build (wall and CPU), the per-round ratios
    A/B and their summaries, and ``calls``, the sequence of (round, build, kind) as run.
    """
    names = list(workers)
    if len(names) != 2:
        raise ValueError("interleave needs exactly two workers")
    if rounds < 1 or steps < 1:
        raise ValueError("rounds and steps must be >= 1")
    for kind in kinds:
        for name in names:
            if warmup > 0:
                workers[name].run(kind, warmup)
    per = {k: {n: {"wall": [], "cpu": []} for n in names} for k in kinds}
    calls = []
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for kind in kinds:
            for name in order:
                res = workers[name].run(kind, steps)
                calls.append((r, name, kind))
                for clock in ("wall", "cpu"):
                    per[kind][name][clock].append(batch * steps / max(res[clock], 1e-12))
        if progress:
            progress(f"round {r + 1}/{rounds}")
    a, b = names
    out = {"calls": calls, "kinds": {}}
    for kind in kinds:
        entry = {"images_per_s": per[kind]}
        for clock in ("wall", "cpu"):
            ratios = [x / y for x, y in zip(per[kind][a][clock], per[kind][b][clock])]
            entry[f"ratio_{clock}"] = ratios
            entry[f"ratio_{clock}_summary"] = summarize(ratios)
            entry[f"{a}_{clock}_summary"] = summarize(per[kind][a][clock])
            entry[f"{b}_{clock}_summary"] = summarize(per[kind][b][clock])
        out["kinds"][kind] = entry
    return out


def format_report(result: dict, labels: dict[str, str]) -> str:
    from .utils import format_table

    rows = []
    for kind, e in result["kinds"].items():
        for clock in ("cpu", "wall"):
            sa, sb, sr = e[f"A_{clock}_summary"], e[f"B_{clock}_summary"], e[f"ratio_{clock}_summary"]
            rows.append([KIND_LABELS.get(kind, kind), clock, f"{sa['median']:.1f}", f"{sb['median']:.1f}",
                         f"{sr['median']:.3f}", f"{sr['min']:.3f}-{sr['max']:.3f}", f"{sr['q1']:.3f}-{sr['q3']:.3f}"])
    head = ["step", "clock", "A img/s", "B img/s", "ratio A/B (median)", "min-max", "IQR"]
    return (f"A = {labels['A']}\nB = {labels['B']}\n" + format_table(head, rows))


def bench_train_step(against: Optional[str], rounds: int = 7, steps: int = 2, warmup: int = 2, threads: int = 1,
                     batch: int = 128, kinds: Sequence[str] = KINDS, autocast: bool = False,
                     against_autocast: Optional[bool] = None, progress: bool = True) -> dict:
    """Run this build (A) against the build at ``against`` (B: a checkout or its ``src``); see module doc.

    Without ``against``, B is this build too (an A/A run: the ratios show the noise floor).
    """
    here = Path(__file__).resolve().parent.parent
    other = Path(against).resolve() if against else here
    if (other / "src" / "dyvm").is_dir():
        other = other / "src"
    if not (other / "dyvm" / "__init__.py").is_file():
        raise FileNotFoundError(f"--against {against}: no dyvm package in {other} (give a checkout or its src)")
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else None
    if say:
        say("starting workers (each builds its C++ kernels on first use)...")
    workers = {}
    try:
        workers["A"] = Worker(str(here), "A", threads, batch, autocast=autocast)
        workers["B"] = Worker(str(other), "B", threads, batch,
                              autocast=autocast if against_autocast is None else against_autocast)
        result = interleave(workers, list(kinds), rounds, steps, warmup, batch, say)
    finally:
        for w in workers.values():
            w.close()
    labels = {"A": f"this build ({here}){' +bf16 autocast' if autocast else ''}",
              "B": f"{other}{' +bf16 autocast' if (autocast if against_autocast is None else against_autocast) else ''}"}
    result.update(labels=labels, rounds=rounds, steps_per_round=steps, warmup=warmup, threads=threads, batch=batch,
                  workers={k: w.info for k, w in workers.items()})
    result["table"] = format_report(result, labels)
    return result
