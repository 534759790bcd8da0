"""The train-step bench on the shared harness, with fake workers: the A/B ratio direction, the report."""
import pytest

from dyvm.bench_train import format_report, worker_runner
from dyvm.timing import interleave


class FakeWorker:
    """Reports fixed seconds per step for each kind; records calls in a shared log."""

    def __init__(self, name, seconds, log):
        self.name, self.seconds, self.log = name, seconds, log

    def run(self, kind, steps):
        self.log.append((self.name, kind, steps))
        t = self.seconds[kind] * steps
        return {"wall": t, "cpu": t / 2}


def run_fake(rounds=4, steps=2, warmup=1):
    log = []
    workers = {"A": FakeWorker("A", {"dyvm": 1.0, "vim": 0.5}, log),
               "B": FakeWorker("B", {"dyvm": 2.5, "vim": 1.0}, log)}
    groups = {kind: {n: worker_runner(w, kind) for n, w in workers.items()} for kind in ("dyvm", "vim")}
    return interleave(groups, rounds, repeats=steps, warmup=warmup, baseline="B", units=128), log


def test_worker_rounds_and_ratio_direction():
    res, log = run_fake()
    assert log[:4] == [("A", "dyvm", 1), ("B", "dyvm", 1), ("A", "vim", 1), ("B", "vim", 1)]
    assert res["calls"][:8] == [(0, "dyvm", "A"), (0, "dyvm", "B"), (0, "vim", "A"), (0, "vim", "B"),
                                (1, "dyvm", "B"), (1, "dyvm", "A"), (1, "vim", "B"), (1, "vim", "A")]
    assert all(s == 2 for _, _, s in log[4:]) and len(log) == 4 + 16
    d = res["groups"]["dyvm"]
    assert d["arms"]["A"]["items_per_s"]["wall"] == pytest.approx(128.0)
    assert d["arms"]["A"]["items_per_s"]["cpu"] == pytest.approx(256.0)
    # A is 2.5x as fast as B on the DyVM step: the speedup of A over the baseline B
    assert d["ratios"]["A"]["wall"]["speedup_summary"]["median"] == pytest.approx(2.5)
    assert res["groups"]["vim"]["ratios"]["A"]["cpu"]["speedup_summary"]["min"] == pytest.approx(2.0)


def test_format_report():
    res, _ = run_fake(rounds=3)
    text = format_report(res, {"A": "this build", "B": "other"})
    lines = text.splitlines()
    assert lines[0] == "A = this build" and lines[1] == "B = other"
    rows = [line for line in lines if line.startswith("| DyVM fine-tuning step")]
    assert len(rows) == 2 and all("2.500" in r for r in rows)


def test_real_workers_a_over_a_with_inference_kinds():
    # two worker processes of this build (an A/A run), the inference kinds, the smallest settings
    from dyvm.bench_train import bench_train_step

    res = bench_train_step(None, rounds=2, steps=1, warmup=0, threads=1, batch=4, kinds=["vim-eval", "dyvm-eval"],
                           progress=False)
    assert list(res["groups"]) == ["vim-eval", "dyvm-eval"] and len(res["calls"]) == 8
    assert all(w["threads"] == 1 for w in res["workers"].values())
    for kind in ("vim-eval", "dyvm-eval"):
        assert len(res["groups"][kind]["ratios"]["A"]["cpu"]["speedup"]) == 2
    assert "Vim inference |" in res["table"] and "DyVM inference |" in res["table"]


def test_real_workers_step_the_vim_tiny_presets_at_224px():
    # --step-model tiny: the workers train the vim_tiny / dyvm_vim_tiny presets on 224 px images (197 tokens)
    from dyvm.bench_train import bench_train_step

    res = bench_train_step(None, rounds=1, steps=1, warmup=0, threads=1, batch=1, kinds=["vim", "dyvm"],
                           progress=False, step_model="tiny")
    assert "224x224x3" in res["step_model"] and res["batch"] == 1
    assert all(len(res["groups"][k]["arms"]["A"]["seconds"]["wall"]) == 1 for k in ("vim", "dyvm"))
    with pytest.raises(ValueError, match="--step-model"):
        bench_train_step(None, step_model="small", progress=False)


def test_real_workers_step_the_canvas_demo_configuration():
    # --step-model canvas: 40-px images, one pruning stage before layer 2 (what `dyvm demo` fine-tunes since session 45)
    from dyvm.bench_train import bench_train_step

    res = bench_train_step(None, rounds=1, steps=1, warmup=0, threads=1, batch=4, kinds=["dyvm", "dyvm-eval"],
                           progress=False, step_model="canvas")
    assert "40x40x1" in res["step_model"] and "before 2" in res["step_model"] and res["batch"] == 4
    assert all(len(res["groups"][k]["arms"]["A"]["seconds"]["wall"]) == 1 for k in ("dyvm", "dyvm-eval"))
