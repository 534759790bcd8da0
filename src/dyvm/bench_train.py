"""``dyvm bench --what train-step``: training-step throughput of this build against another one.

Two persistent worker processes, one per build, each importing its own ``dyvm`` (through
``PYTHONPATH``) and holding the demo's two training steps (batch 128, 28x28x1 images, depth 8,
D=64, 10 classes), or with ``step_model="tiny"`` those of the ``vim_tiny`` / ``dyvm_vim_tiny`` presets as they
are (224x224x3 images, 197 tokens, 1000 classes, the preset's pruning; the batch is the caller's):

- ``dyvm``: DyVM fine-tuning step at the demo's operating point (pruning before layers 5, 6, 7,
  ρ = 0.3, β = 0.8, the ``dyvm`` recipe's Gumbel-top-k sampler where the build has it), loss
  ``DyVMLoss.for_model(model, CrossEntropyLoss(), teacher)`` with a frozen Vim teacher, AdamW (the build's
  own ``dyvm.engine.make_optimizer`` where it has one: fused; else torch's AdamW, what that build trained with);
- ``vim``: the Vim teacher's own step (CE, the same AdamW);
- ``dyvm-eval`` / ``vim-eval``: the same two models' inference (eval forward, no grad) on the same batch.

The rounds are :func:`dyvm.timing.interleave`'s (the harness of every ``dyvm bench``
comparison): after warm-up the builds run round by round, alternating which goes first (A B,
B A, ...); each round times ``steps`` steps per build and kind; the reported ratio is the median
over rounds of the per-round speed ratio A/B (with min-max and quartiles), from wall-clock time
and from the worker's CPU time (user + system of its process, timed in the worker).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from .timing import interleave
from .utils import child_malloc_env

KINDS = ("dyvm", "vim")
# what --step-model names (the worker builds it): the configuration's words for the report
STEP_MODELS = {"demo": "the centred demo's configuration (28x28x1 images, depth 8, D 64, pruning before 5, 6, 7)",
               "tiny": "the vim_tiny / dyvm_vim_tiny presets (224x224x3 images, 197 tokens)",
               "canvas": "the canvas demo's configuration (40x40x1 images, depth 8, D 64, pruning before 2, rho 0.57; "
                         "without its keep guidance)"}
KIND_LABELS = {"dyvm": "DyVM fine-tuning step", "vim": "Vim teacher step", "dyvm-eval": "DyVM inference",
               "vim-eval": "Vim inference"}
WORKER_SOURCE = Path(__file__).resolve().parent / "_train_step_worker.py"


class WorkerError(RuntimeError):
    pass


class Worker:
    """A persistent worker process for the build whose ``src`` folder is ``src``."""

    def __init__(self, src: str, label: str, threads: int = 1, batch: int = 128, seed: int = 0,
                 autocast: bool = False, python: Optional[str] = None, step_model: str = "demo"):
        self.label, self.src = label, str(Path(src).resolve())
        env = child_malloc_env(dict(os.environ, PYTHONPATH=self.src, OMP_NUM_THREADS=str(threads),
                                         MKL_NUM_THREADS=str(threads)))
        self._cwd = tempfile.mkdtemp(prefix="dyvm-bench-")  # nothing importable next to the worker
        self.proc = subprocess.Popen([python or sys.executable, "-c", WORKER_SOURCE.read_text()], cwd=self._cwd,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self.request({"cmd": "setup", "threads": threads, "batch": batch, "seed": seed,
                                  "autocast": autocast, "model": step_model})
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


def worker_runner(worker: Worker, kind: str):
    """A :mod:`dyvm.timing` runner: ``n`` training steps of ``kind`` in ``worker``, timed there."""
    return lambda n: worker.run(kind, n)


def format_report(result: dict, labels: dict[str, str]) -> str:
    from .utils import format_table

    rows = []
    for kind, e in result["groups"].items():
        for clock in ("cpu", "wall"):
            a, b = (e["arms"][n]["items_per_s"][clock] for n in ("A", "B"))
            sr = e["ratios"]["A"][clock]["speedup_summary"]
            rows.append([KIND_LABELS.get(kind, kind), clock, f"{a:.1f}", f"{b:.1f}", f"{sr['median']:.3f}",
                         f"{sr['min']:.3f}-{sr['max']:.3f}", f"{sr['q1']:.3f}-{sr['q3']:.3f}"])
    head = ["step", "clock", "A img/s", "B img/s", "ratio A/B (median)", "min-max", "IQR"]
    return (f"A = {labels['A']}\nB = {labels['B']}\n" + format_table(head, rows))


def bench_train_step(against: Optional[str], rounds: int = 7, steps: int = 2, warmup: int = 2, threads: int = 1,
                     batch: int = 128, kinds: Sequence[str] = KINDS, autocast: bool = False,
                     against_autocast: Optional[bool] = None, progress: bool = True,
                     precision: Optional[float] = None, max_rounds: Optional[int] = None,
                     step_model: str = "demo") -> dict:
    """Run this build (A) against the build at ``against`` (B: a checkout or its ``src``); see module doc.

    Without ``against``, B is this build too (an A/A run: the ratios show the noise floor).
    step_model: "demo" (the demo's configuration) or "tiny" (the Vim-T presets at 224 px).
    """
    if step_model not in STEP_MODELS:
        raise ValueError(f"--step-model must be one of {', '.join(STEP_MODELS)}, got {step_model!r}")
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
        workers["A"] = Worker(str(here), "A", threads, batch, autocast=autocast, step_model=step_model)
        workers["B"] = Worker(str(other), "B", threads, batch,
                              autocast=autocast if against_autocast is None else against_autocast,
                              step_model=step_model)
        groups = {kind: {name: worker_runner(w, kind) for name, w in workers.items()} for kind in kinds}
        result = interleave(groups, rounds, repeats=steps, warmup=warmup, baseline="B", units=batch, progress=say,
                            precision=precision, max_rounds=max_rounds)
    finally:
        for w in workers.values():
            w.close()
    def sampler(name: str) -> str:  # builds from before the sampler option do not report one
        info = workers[name].info
        return f", DyVM training sampler {info.get('token_sampler', 'gumbel')}, optimiser {info.get('optimizer', '?')}"

    labels = {"A": f"this build ({here}){' +bf16 autocast' if autocast else ''}{sampler('A')}",
              "B": f"{other}{' +bf16 autocast' if (autocast if against_autocast is None else against_autocast) else ''}"
                   f"{sampler('B')}"}
    result.update(labels=labels, steps_per_round=steps, warmup=warmup, threads=threads, batch=batch,
                  step_model=STEP_MODELS[step_model],
                  workers={k: w.info for k, w in workers.items()})
    result["table"] = format_report(result, labels)
    return result
