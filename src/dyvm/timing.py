"""Interleaved timing rounds: the one harness behind every comparison of ``dyvm bench``.

A *runner* runs a workload ``n`` times and returns the seconds it took on each clock,
``{"wall": s, "cpu": s}`` (``cpu``: user + system time of the process that ran it; with one
thread on a shared machine the steadier of the two, as it leaves out the time spent waiting for
a core). Runners are grouped into comparisons (e.g. Vim vs DyVM at batch 8). :func:`interleave`
warms every runner up, then runs ``rounds`` rounds; in each round every comparison runs each
of its arms once (``repeats`` calls), in the arm order for even rounds and reversed for odd ones
(A B, B A, A B, ... = ABBA pairs), so a slow drift of the machine's load hits all arms alike.
The result holds, per comparison and arm, the seconds per call of every round, and per arm the
per-round ratio of its time to the baseline arm's (the first arm unless told), summarised by the
median, quartiles and min/max. Times of different rounds are never divided by each other. With a
``precision``, rounds are added until each median ratio's 95% confidence interval (from order
statistics: no distribution assumed) is that narrow, so a noisy machine buys more rounds.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

Runner = Callable[[int], Mapping[str, float]]
CLOCKS = ("wall", "cpu")


def timed(fn: Callable[[], Any], device: Optional[torch.device] = None) -> Runner:
    """A runner calling ``fn()`` n times; CUDA is synchronised before the clocks start and stop."""

    def sync():
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    def run(n: int) -> dict[str, float]:
        sync()
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        return {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}

    return run


def round_order(arms: Sequence[str], r: int) -> list[str]:
    """The arms in the order they run in round ``r``: as given for even rounds, reversed for odd ones."""
    return list(arms) if r % 2 == 0 else list(arms)[::-1]


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and quartiles (inclusive method) of a non-empty sequence."""
    vals = sorted(values)
    if not vals:
        raise ValueError("summarize needs at least one value")
    if len(vals) >= 2:
        q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
    else:
        q1 = q3 = vals[0]
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1], "q1": q1, "q3": q3, "n": len(vals)}


def median_ci(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free confidence interval of the median (about 95% with the default ``z``): the order
    statistics ``(n - z sqrt(n)) / 2`` and ``1 + (n + z sqrt(n)) / 2`` (1-based, clamped to the sample), so
    no shape is assumed for the per-round ratios. With fewer than 6 values it is their whole range."""
    vals = sorted(values)
    if not vals:
        raise ValueError("median_ci needs at least one value")
    n = len(vals)
    half = z * math.sqrt(n) / 2
    lo = max(1, math.floor(n / 2 - half))
    hi = min(n, math.ceil(1 + n / 2 + half))
    return vals[lo - 1], vals[hi - 1]


def _time_ratios(arm: Sequence[float], base: Sequence[float]) -> list[float]:
    """Per-round time ratios arm / base (seconds of the same rounds)."""
    return [a / max(b, 1e-12) for a, b in zip(arm, base)]


def ci_halfwidth(values: Sequence[float]) -> float:
    """Half the width of :func:`median_ci` over the median: the relative precision of a median ratio."""
    lo, hi = median_ci(values)
    return (hi - lo) / 2 / max(abs(statistics.median(values)), 1e-12)


def interleave(groups: Mapping[str, Mapping[str, Runner]], rounds: int = 7, repeats: Optional[int] = None,
               warmup: int = 1, target_seconds: float = 0.5, baseline: Optional[str] = None,
               units: int | Mapping[str, int] = 1, progress: Optional[Callable[[str], None]] = None,
               precision: Optional[float] = None, max_rounds: Optional[int] = None) -> dict:
    """Time every group's arms in interleaved rounds (see the module docstring).

    groups: {comparison: {arm: runner}} (one arm is allowed: it is timed, without ratios).
    repeats: calls per arm and round; None picks, per group, enough calls for about ``target_seconds``
    per arm from the last warm-up call (at least 1). warmup: untimed calls per arm before round 0
    (at least 2 when ``repeats`` is None, so that the calibrating call is not the cold first one). baseline: the arm every ratio divides by (default: each
    group's first arm). units: items (e.g. images) per call, for items/s; an int or one per group.
    precision: after ``rounds`` rounds, keep adding rounds (up to ``max_rounds``, default 3 x ``rounds``)
    until every ratio's median has a 95% confidence interval (:func:`median_ci`) within ±``precision`` of it,
    on both clocks; a noisy machine then buys more rounds instead of a ratio that moves between runs.

    Returns {"calls": [(round, group, arm), ...], "rounds": rounds run, "precision", "converged" (every
    ratio within ``precision``; None without one), "groups": {group: {"baseline", "repeats", "units",
    "arms": {arm: {"seconds": {clock: [s per call, one per round]}, "seconds_summary": {clock: summary},
    "items_per_s": {clock: median}}}, "ratios": {arm: {clock: {"time": [...], "time_summary",
    "speedup": [...], "speedup_summary", "ci95": [lo, hi] of the median time ratio}}}}}}, where per round
    time = arm's s / baseline's s and speedup = baseline's s / arm's s.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if repeats is not None and repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if precision is not None and not precision > 0:
        raise ValueError(f"precision must be > 0, got {precision}")
    max_rounds = rounds if precision is None else (3 * rounds if max_rounds is None else max_rounds)
    if max_rounds < rounds:
        raise ValueError(f"max_rounds ({max_rounds}) must be >= rounds ({rounds})")
    if not groups or any(not arms for arms in groups.values()):
        raise ValueError("interleave needs at least one group with at least one arm")
    if baseline is not None and any(baseline not in arms for arms in groups.values()):
        raise ValueError(f"baseline arm {baseline!r} is missing from a group")
    calls: list[tuple[int, str, str]] = []
    out: dict[str, Any] = {"calls": calls, "groups": {}}
    reps: dict[str, int] = {}
    for g, arms in groups.items():
        last = {}
        for name, run in arms.items():
            for _ in range(max(warmup, 2 if repeats is None else 0)):  # the first call pays one-time costs
                last[name] = run(1)["wall"]
        reps[g] = repeats if repeats is not None else max(
            1, math.ceil(target_seconds / max(statistics.mean(last.values()), 1e-9)))
    seconds = {g: {a: {c: [] for c in CLOCKS} for a in arms} for g, arms in groups.items()}

    def precise() -> bool:  # every ratio's median known to within ±precision, on both clocks
        for g, arms in groups.items():
            base = seconds[g][baseline or next(iter(arms))]
            for name in arms:
                if seconds[g][name] is base:
                    continue
                for clock in CLOCKS:
                    if ci_halfwidth(_time_ratios(seconds[g][name][clock], base[clock])) > precision:
                        return False
        return True

    r = 0
    while r < rounds or (precision is not None and r < max_rounds and not precise()):
        for g, arms in groups.items():
            for name in round_order(arms, r):
                res = arms[name](reps[g])
                calls.append((r, g, name))
                for clock in CLOCKS:
                    seconds[g][name][clock].append(res[clock] / reps[g])
        r += 1
        if progress:
            progress(f"round {r}/{rounds}" if r <= rounds else f"round {r} (up to {max_rounds}: ±{100 * precision:g}% "
                     "not reached yet)")
    out.update(rounds=r, precision=precision, converged=None if precision is None else precise())
    for g, arms in groups.items():
        base = baseline or next(iter(arms))
        n_units = units if isinstance(units, int) else units[g]
        entry: dict[str, Any] = {"baseline": base, "repeats": reps[g], "units": n_units, "arms": {}, "ratios": {}}
        for name in arms:
            s = seconds[g][name]
            entry["arms"][name] = {
                "seconds": s,
                "seconds_summary": {c: summarize(s[c]) for c in CLOCKS},
                "items_per_s": {c: n_units / max(statistics.median(s[c]), 1e-12) for c in CLOCKS},
            }
            if name == base:
                continue
            entry["ratios"][name] = {}
            for clock in CLOCKS:
                time_ratio = _time_ratios(s[clock], seconds[g][base][clock])
                speedup = _time_ratios(seconds[g][base][clock], s[clock])
                entry["ratios"][name][clock] = {"time": time_ratio, "time_summary": summarize(time_ratio),
                                                "speedup": speedup, "speedup_summary": summarize(speedup),
                                                "ci95": list(median_ci(time_ratio))}
        out["groups"][g] = entry
    return out


SPREAD_LIMIT = 0.05  # the ±5% of issue 10's run-to-run goal, applied to the rounds of one run


def spread_note(result: dict, clock: str = "cpu", limit: float = SPREAD_LIMIT) -> str:
    """One line naming every ratio of :func:`interleave`'s ``result`` whose per-round values spread by more than
    ±``limit`` (half the interquartile range over the median, ``clock`` time), or "" when none does: the
    machine was too noisy for those ratios to repeat from run to run."""
    wide = []
    for g, entry in result["groups"].items():
        for arm, ratio in entry["ratios"].items():
            s = ratio[clock]["time_summary"]
            half = (s["q3"] - s["q1"]) / 2 / max(s["median"], 1e-12)
            if half > limit:
                wide.append(f"{g} {arm} ±{100 * half:.0f}%")
    if not wide:
        return ""
    return (f"note: noisy rounds: {', '.join(wide)} (half the interquartile range of the per-round ratios, {clock} "
            f"time; limit ±{100 * limit:.0f}%). These ratios may move between runs: rerun with nothing else running, "
            "or at a quieter time.")


def rounds_text(result: dict) -> str:
    """How many rounds :func:`interleave` ran, and whether the ratios reached its ``precision``."""
    n, p = result["rounds"], result.get("precision")
    if p is None:
        return f"{n} interleaved rounds"
    if result["converged"]:
        return f"{n} interleaved rounds (every median ratio's 95% CI within ±{100 * p:g}%)"
    return f"{n} interleaved rounds (the most allowed; NOT every median ratio's 95% CI within ±{100 * p:g}%)"


def format_comparison(result: dict, clock: str = "wall", what: str = "time") -> str:
    """A Markdown table of :func:`interleave`'s result: per group and arm the median ms per call,
    items/s, and (``what`` = "time" or "speedup") the median per-round ratio to the baseline with
    its min-max and IQR."""
    from .utils import format_table

    rows = []
    for g, e in result["groups"].items():
        for name, arm in e["arms"].items():
            ms = 1e3 * arm["seconds_summary"][clock]["median"]
            row = [g, name, f"{ms:.1f}", f"{arm['items_per_s'][clock]:.1f}"]
            ratio = e["ratios"].get(name, {}).get(clock)
            if ratio is None:
                row += ["(baseline)" if name == e["baseline"] else "", "", ""]
            else:
                s = ratio[f"{what}_summary"]
                row += [f"{s['median']:.3f}", f"{s['min']:.3f}-{s['max']:.3f}", f"{s['q1']:.3f}-{s['q3']:.3f}"]
            rows.append(row)
    label = "time / baseline" if what == "time" else "speedup vs baseline"
    return format_table(["comparison", "arm", f"ms ({clock})", "items/s", f"{label} (median)", "min-max", "IQR"],
                        rows)
