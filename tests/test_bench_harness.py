"""The interleaved-rounds harness of ``dyvm bench`` (dyvm.timing) with fake workloads on a fake clock:
the order of the calls, the per-round ratios and their statistics, the JSON and table output. No timing."""
import json
import os
import subprocess
import sys

import pytest

from dyvm.timing import (ci_halfwidth, format_comparison, interleave, median_ci, round_order, rounds_text,
                          spread_note, summarize, timed)


class FakeClock:
    """A machine whose load drifts: every call costs ``cost * (1 + drift * calls so far)`` seconds."""

    def __init__(self, drift=0.0):
        self.drift, self.calls, self.log = drift, 0, []

    def runner(self, name, cost, cpu_share=0.5):
        def run(n):
            t = 0.0
            for _ in range(n):
                self.calls += 1
                t += cost * (1 + self.drift * self.calls)
            self.log.append((name, n))
            return {"wall": t, "cpu": t * cpu_share}

        return run


def test_summarize():
    s = summarize([3.0, 1.0, 2.0, 4.0, 5.0])
    assert (s["median"], s["min"], s["max"], s["q1"], s["q3"], s["n"]) == (3.0, 1.0, 5.0, 2.0, 4.0, 5)
    one = summarize([2.5])
    assert one["median"] == one["q1"] == one["q3"] == one["min"] == 2.5
    assert summarize([1.0, 4.0])["median"] == 2.5
    with pytest.raises(ValueError):
        summarize([])


def test_round_order_alternates():
    assert [round_order("AB", r) for r in range(4)] == [["A", "B"], ["B", "A"], ["A", "B"], ["B", "A"]]
    assert round_order(["x", "y", "z"], 1) == ["z", "y", "x"]


def test_interleave_order_warmup_and_ratios():
    clock = FakeClock()
    groups = {"b1": {"vim": clock.runner("vim b1", 0.10), "dyvm": clock.runner("dyvm b1", 0.06)},
              "b8": {"vim": clock.runner("vim b8", 0.80), "dyvm": clock.runner("dyvm b8", 0.40)}}
    res = interleave(groups, rounds=4, repeats=3, warmup=2, units={"b1": 1, "b8": 8})
    # warm-up: every arm, one call at a time, before any timed round
    assert clock.log[:8] == [("vim b1", 1), ("vim b1", 1), ("dyvm b1", 1), ("dyvm b1", 1),
                             ("vim b8", 1), ("vim b8", 1), ("dyvm b8", 1), ("dyvm b8", 1)]
    assert all(n == 3 for _, n in clock.log[8:]) and len(clock.log) == 8 + 4 * 4
    # A B in even rounds, B A in odd ones, every group within each round
    assert res["calls"][:8] == [(0, "b1", "vim"), (0, "b1", "dyvm"), (0, "b8", "vim"), (0, "b8", "dyvm"),
                                (1, "b1", "dyvm"), (1, "b1", "vim"), (1, "b8", "dyvm"), (1, "b8", "vim")]
    g = res["groups"]["b8"]
    assert g["baseline"] == "vim" and g["repeats"] == 3 and g["units"] == 8
    assert g["arms"]["vim"]["seconds"]["wall"] == pytest.approx([0.8] * 4)          # seconds per call
    assert g["arms"]["vim"]["seconds"]["cpu"] == pytest.approx([0.4] * 4)
    assert g["arms"]["dyvm"]["items_per_s"]["wall"] == pytest.approx(20.0)
    assert set(g["ratios"]) == {"dyvm"}
    assert g["ratios"]["dyvm"]["wall"]["time"] == pytest.approx([0.5] * 4)
    assert g["ratios"]["dyvm"]["cpu"]["speedup_summary"]["median"] == pytest.approx(2.0)
    assert res["groups"]["b1"]["ratios"]["dyvm"]["wall"]["time_summary"]["median"] == pytest.approx(0.6)


def test_alternating_order_cancels_drift_in_the_median_ratio():
    # the machine slows by 5% per call: with a fixed order A always runs first and looks faster; the
    # alternating order makes the per-round ratios straddle the true 1.0, whose median they give
    clock = FakeClock(drift=0.05)
    res = interleave({"g": {"A": clock.runner("A", 1.0), "B": clock.runner("B", 1.0)}}, rounds=6, repeats=1,
                     warmup=0)
    ratios = res["groups"]["g"]["ratios"]["B"]["wall"]["time"]
    assert ratios[0] > 1 and ratios[1] < 1 and ratios[2] > 1        # B after A, then before it, ...
    s = res["groups"]["g"]["ratios"]["B"]["wall"]["time_summary"]
    assert s["min"] < 1 < s["max"] and s["median"] == pytest.approx(1.0, abs=0.01)
    assert s["min"] <= s["q1"] <= s["median"] <= s["q3"] <= s["max"] and s["n"] == 6


def test_repeats_chosen_from_the_warmup_and_explicit_baseline():
    clock = FakeClock()
    slow, first = clock.runner("slow", 0.2), []

    def cold_then_slow(n):  # the first call of a workload pays one-time costs (allocation, kernel load)
        res = slow(n)
        if not first:
            first.append(1)
            return {k: v + 100.0 for k, v in res.items()}
        return res

    res = interleave({"g": {"slow": cold_then_slow, "fast": clock.runner("fast", 0.05),
                            "mid": clock.runner("mid", 0.1)}},
                     rounds=3, repeats=None, warmup=0, target_seconds=1.0, baseline="fast")
    g = res["groups"]["g"]
    assert g["repeats"] == 9                                 # 1.0 s / mean(0.2, 0.05, 0.1) s, rounded up
    # two warm-up calls each despite warmup=0: the second (not the cold first) sets the repeats
    assert clock.log[:6] == [("slow", 1), ("slow", 1), ("fast", 1), ("fast", 1), ("mid", 1), ("mid", 1)]
    assert res["calls"][3:6] == [(1, "g", "mid"), (1, "g", "fast"), (1, "g", "slow")]
    assert set(g["ratios"]) == {"slow", "mid"}
    assert g["ratios"]["slow"]["wall"]["time_summary"]["median"] == pytest.approx(4.0)
    assert g["ratios"]["mid"]["wall"]["speedup_summary"]["median"] == pytest.approx(0.5)


def test_single_arm_is_timed_without_ratios():
    clock = FakeClock()
    res = interleave({"train": {"step": clock.runner("step", 0.3)}}, rounds=2, repeats=1, warmup=0, units=4)
    g = res["groups"]["train"]
    assert g["ratios"] == {} and g["arms"]["step"]["items_per_s"]["wall"] == pytest.approx(4 / 0.3)


def test_json_and_table_output():
    clock = FakeClock()
    res = interleave({"b1": {"vim": clock.runner("v", 0.1), "dyvm": clock.runner("d", 0.05)}}, rounds=3, repeats=1,
                     warmup=0)
    back = json.loads(json.dumps(res))
    g = back["groups"]["b1"]
    for key in ("baseline", "repeats", "units", "arms", "ratios"):
        assert key in g
    assert set(g["ratios"]["dyvm"]["wall"]["time_summary"]) == {"median", "min", "max", "q1", "q3", "n"}
    assert len(back["calls"]) == 6
    table = format_comparison(res, "wall")
    lines = table.splitlines()
    assert len(lines) == 4 and "(baseline)" in lines[2] and "0.500" in lines[3]
    assert "2.000" in format_comparison(res, "cpu", what="speedup").splitlines()[3]


def test_timed_runs_the_callable_n_times():
    count = []
    res = timed(lambda: count.append(1))(5)
    assert len(count) == 5 and res["wall"] >= 0 and res["cpu"] >= 0


def test_interleave_rejects_bad_arguments():
    run = FakeClock().runner("a", 1.0)
    for kwargs in (dict(rounds=0), dict(repeats=0), dict(warmup=-1), dict(baseline="nope")):
        with pytest.raises(ValueError):
            interleave({"g": {"a": run, "b": run}}, **{"rounds": 2, "repeats": 1, **kwargs})
    with pytest.raises(ValueError):
        interleave({}, rounds=1)
    with pytest.raises(ValueError):
        interleave({"g": {}}, rounds=1)


def test_spread_note_names_only_the_ratios_that_spread_beyond_the_limit():
    clock = FakeClock()
    steady = interleave({"steady": {"A": clock.runner("A", 1.0), "B": clock.runner("B", 0.5)}}, rounds=6, repeats=1,
                        warmup=0)
    assert spread_note(steady) == ""

    def alternating(costs):  # B's rounds cost 0.5 and 0.8 in turn: per-round ratios 0.5, 0.8, 0.5, ...
        costs = iter(costs)
        return lambda n: (lambda v: {"wall": v * n, "cpu": v * n})(next(costs))

    noisy = interleave({"noisy b8": {"A": lambda n: {"wall": 1.0 * n, "cpu": 1.0 * n},
                                     "B": alternating([0.5, 0.8] * 3)}}, rounds=6, repeats=1, warmup=0)
    note = spread_note(noisy)
    assert note.startswith("note: noisy rounds: noisy b8 B ±") and "limit ±5%" in note
    assert spread_note(noisy, limit=0.5) == ""


def test_median_ci_is_the_order_statistics_interval():
    vals = [float(v) for v in range(1, 21)]                   # n = 20: ranks floor(10 - 4.38) = 5, ceil(15.38) = 16
    assert median_ci(vals) == (5.0, 16.0)
    assert median_ci(list(reversed(vals))) == (5.0, 16.0)       # order of the rounds does not matter
    assert median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)            # few values: their whole range
    assert ci_halfwidth([1.0] * 9) == 0.0
    assert ci_halfwidth(vals) == pytest.approx((16 - 5) / 2 / 10.5)
    with pytest.raises(ValueError):
        median_ci([])


def noisy_pair(clock, spread, every=3):
    """B costs 0.5 s, times 1 + spread in every ``every``-th round: ratios 0.5 with outliers."""
    count = []

    def b(n):
        count.append(1)
        return {k: v * (1 + spread * (len(count) % every == 0)) for k, v in clock.runner("B", 0.5)(n).items()}

    return {"g": {"A": clock.runner("A", 1.0), "B": b}}


def test_precision_stops_as_soon_as_every_ratio_is_precise():
    clock = FakeClock()
    res = interleave(noisy_pair(clock, 0.0), rounds=5, repeats=1, warmup=0, precision=0.02)
    assert res["rounds"] == 5 and res["converged"] is True and res["precision"] == 0.02   # exact ratios: no extra round
    assert res["groups"]["g"]["ratios"]["B"]["wall"]["ci95"] == pytest.approx([0.5, 0.5])
    assert rounds_text(res) == "5 interleaved rounds (every median ratio's 95% CI within ±2%)"


def test_precision_adds_alternating_rounds_until_the_cap():
    clock = FakeClock()
    res = interleave(noisy_pair(clock, 0.4), rounds=4, repeats=1, warmup=0, precision=0.01, max_rounds=10)
    assert res["rounds"] == 10 and res["converged"] is False                # outliers keep the CI wide
    assert len(res["groups"]["g"]["arms"]["A"]["seconds"]["wall"]) == 10
    assert [c[2] for c in res["calls"] if c[0] >= 4] == ["A", "B", "B", "A"] * 3   # extra rounds keep the ABBA order
    assert rounds_text(res) == "10 interleaved rounds (the most allowed; NOT every median ratio's 95% CI within ±1%)"
    # rarer outliers: after enough extra rounds the median's CI leaves them out (n = 19: 4 outliers, CI ranks 5-15)
    rare = interleave(noisy_pair(FakeClock(), 0.4, every=4), rounds=4, repeats=1, warmup=0, precision=0.01,
                      max_rounds=40)
    assert rare["rounds"] == 19 and rare["converged"] is True
    assert rare["groups"]["g"]["ratios"]["B"]["wall"]["ci95"] == pytest.approx([0.5, 0.5])
    # without a precision: exactly the rounds asked for
    plain = interleave(noisy_pair(FakeClock(), 0.4), rounds=4, repeats=1, warmup=0)
    assert plain["rounds"] == 4 and plain["converged"] is None and rounds_text(plain) == "4 interleaved rounds"


def test_precision_arguments_are_checked():
    run = FakeClock().runner("a", 1.0)
    for kwargs in (dict(precision=0.0), dict(precision=-1.0), dict(precision=0.02, max_rounds=1)):
        with pytest.raises(ValueError):
            interleave({"g": {"a": run, "b": run}}, rounds=2, repeats=1, **kwargs)


_FAULTS_OF_A_REUSED_BLOCK = """
import resource, sys, torch
from dyvm.utils import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
x = torch.ones(16 << 20)  # 64 MiB, over glibc's largest mmap threshold
del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(8 << 20)  # 32 MiB: fits in the freed block
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_of_a_reused_block(mode: str, **env: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _FAULTS_OF_A_REUSED_BLOCK, mode], capture_output=True, text=True,
                         env=dict(os.environ, **env), check=True).stdout.split()
    return bool(int(out[0])), int(out[1])


def test_retained_freed_memory_is_reused_without_page_faults():
    """The dyvm command keeps freed memory in the process (glibc): a 32 MiB tensor allocated after a 64 MiB one was
    freed reuses its pages instead of page-faulting fresh ones in (8,192 faults of 4 KiB pages without it);
    DYVM_MALLOC=system opts out."""
    applied, faults = _faults_of_a_reused_block("retain")
    assert applied and faults < 500
    plain_applied, plain = _faults_of_a_reused_block("plain")
    assert not plain_applied and plain > 8000
    opted_out, opted_faults = _faults_of_a_reused_block("retain", DYVM_MALLOC="system")
    assert not opted_out and opted_faults > 8000


def test_benchmark_workers_get_the_same_malloc_setting():
    from dyvm.utils import GLIBC_TUNABLES, child_malloc_env

    assert child_malloc_env({})["GLIBC_TUNABLES"] == GLIBC_TUNABLES
    assert child_malloc_env({"GLIBC_TUNABLES": "glibc.x=1"})["GLIBC_TUNABLES"] == "glibc.x=1:" + GLIBC_TUNABLES
    assert "GLIBC_TUNABLES" not in child_malloc_env({"DYVM_MALLOC": "system"})
