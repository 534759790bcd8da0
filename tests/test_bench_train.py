"""The train-step bench harness (interleaving, statistics), with fake workers: no timing involved."""
import pytest

from dyvm.bench_train import interleave, summarize


class FakeWorker:
    """Reports fixed seconds per step for each kind; records calls in a shared log."""

    def __init__(self, name, seconds, log, drift=0.0):
        self.name, self.seconds, self.log, self.drift = name, seconds, log, drift
        self.clock = 0

    def run(self, kind, steps):
        self.log.append((self.name, kind, steps))
        self.clock += 1
        t = self.seconds[kind] * steps * (1 + self.drift * self.clock)
        return {"wall": t, "cpu": t / 2}


def test_summarize():
    s = summarize([3.0, 1.0, 2.0, 4.0, 5.0])
    assert s["median"] == 3.0 and s["min"] == 1.0 and s["max"] == 5.0 and s["n"] == 5
    assert s["q1"] == 2.0 and s["q3"] == 4.0
    one = summarize([2.5])
    assert one["median"] == one["q1"] == one["q3"] == 2.5


def test_interleave_order_and_ratios():
    log = []
    a = FakeWorker("A", {"dyvm": 1.0, "vim": 0.5}, log)
    b = FakeWorker("B", {"dyvm": 2.5, "vim": 1.0}, log)
    res = interleave({"A": a, "B": b}, ["dyvm", "vim"], rounds=4, steps=2, warmup=1, batch=128)
    # warm-up: every kind on each worker, 1 step
    assert log[:4] == [("A", "dyvm", 1), ("B", "dyvm", 1), ("A", "vim", 1), ("B", "vim", 1)]
    # rounds alternate which build goes first
    assert res["calls"][:8] == [(0, "A", "dyvm"), (0, "B", "dyvm"), (0, "A", "vim"), (0, "B", "vim"),
                                (1, "B", "dyvm"), (1, "A", "dyvm"), (1, "B", "vim"), (1, "A", "vim")]
    assert len(res["calls"]) == 16 and all(s == 2 for _, _, s in log[4:])
    d = res["kinds"]["dyvm"]
    assert d["images_per_s"]["A"]["wall"] == pytest.approx([128.0] * 4)
    assert d["images_per_s"]["A"]["cpu"] == pytest.approx([256.0] * 4)
    assert d["ratio_wall_summary"]["median"] == pytest.approx(2.5)
    assert d["ratio_cpu_summary"]["min"] == pytest.approx(2.5)
    assert res["kinds"]["vim"]["ratio_wall_summary"]["median"] == pytest.approx(2.0)


def test_interleave_ratio_spread_under_drift():
    # a machine slowing down over time: per-round ratios stay paired, their spread is reported
    log = []
    a = FakeWorker("A", {"dyvm": 1.0}, log, drift=0.1)
    b = FakeWorker("B", {"dyvm": 2.0}, log, drift=0.1)
    res = interleave({"A": a, "B": b}, ["dyvm"], rounds=5, steps=1, warmup=0, batch=10)
    s = res["kinds"]["dyvm"]["ratio_wall_summary"]
    assert s["n"] == 5 and s["min"] <= s["q1"] <= s["median"] <= s["q3"] <= s["max"]
    assert s["median"] == pytest.approx(2.0)  # both workers drift alike per call


def test_interleave_rejects_bad_arguments():
    w = FakeWorker("A", {"dyvm": 1.0}, [])
    with pytest.raises(ValueError):
        interleave({"A": w}, ["dyvm"], 2, 1, 0, 1)
    with pytest.raises(ValueError):
        interleave({"A": w, "B": w}, ["dyvm"], 0, 1, 0, 1)
