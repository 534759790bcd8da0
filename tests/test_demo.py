"""`dyvm demo --quick` end to end on the real Fashion-MNIST files, and `dyvm viz`."""
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from dyvm.data import FASHION_MNIST_DIRS, read_idx

FIGURES = ("pruning.png", "branch_usage.png", "accuracy_vs_flops.png", "training.png")


@pytest.fixture(scope="module")
def report(tmp_path_factory, fashion_mnist):  # fails (never skips) without the dataset
    out = tmp_path_factory.mktemp("demo") / "report"
    proc = subprocess.run([sys.executable, "-m", "dyvm", "demo", "--quick", "--output", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # --no-progress turns off the bars, not the news: every phase and every epoch still gets a line
    assert "== 1/5 teacher: the shipped Vim checkpoint" in proc.stderr and "== 5/5" in proc.stderr
    assert proc.stderr.lstrip().startswith("dyvm demo --quick: a smoke run")  # says so in its first lines
    assert "epoch 1/" in proc.stderr and "report written to" in proc.stderr
    return out


def test_report_files_and_sane_numbers(report):
    for name in ("report.md", "results.json") + FIGURES:
        assert (report / name).is_file() and (report / name).stat().st_size > 1000, name
    for name in FIGURES:
        with Image.open(report / name) as im:
            assert im.format == "PNG" and min(im.size) > 100
    r = json.loads((report / "results.json").read_text())
    assert {"teacher", "dyvm", "trained_baselines", "curves", "meta", "claim"} <= set(r)
    t, d = r["teacher"], r["dyvm"]
    assert t["source"]["kind"] == "shipped checkpoint" and t["top1"] > 85  # the shipped teacher, on 2,000 test images
    assert d["top1"] > 20 and d["score"] == "predictor"  # far above chance (10 classes)
    for name in ("random", "static"):  # trained baselines, reloaded with the selection rule they trained with
        b = r["trained_baselines"][name]
        assert b["score"] == name and b["top1"] > 20 and b["gflops_official"] < t["gflops_official"]
        assert b["training_masks"] == "nested" == r["meta"]["plan"]["baseline_masks"]
        paired = b["paired_vs_dyvm"]  # DyVM against it image by image: the difference of the two top-1s
        assert paired["images"] == 2000 and 0 < paired["p_value"] <= 1
        assert abs(100 * (paired["only_a"] - paired["only_b"]) / paired["images"] - (d["top1"] - b["top1"])) < 1e-9
    assert r["claim"]["drop_bar"] is None and r["claim"]["top1_drop_within_bar"] is None  # a smoke run claims nothing
    rec = r["meta"]["finetune_recipe"]
    assert rec["recipe"] == "dyvm" and rec["keep_prior"] is True and rec["subset"] == 4096
    # DyVM alone is guided by the teacher's choice; the baselines have no predictor to guide. All on the canvas.
    assert (rec["keep_guidance"], rec["keep_ratio_source"]) == (1.0, "probabilities") and r["meta"]["canvas"] == 40
    for name, score in (("dyvm", "predictor"), ("random", "random"), ("static", "static")):
        config = json.loads((report / "checkpoints" / name / "config.json").read_text())
        assert (config["score"], config["canvas"], config["epochs"]) == (score, 40, 1)
        assert (config["keep_guidance"] > 0) == (name == "dyvm")
    assert d["gflops_official"] < t["gflops_official"] and d["gflops_full"] < t["gflops_full"]
    assert len(d["token_keep"]) == len(r["meta"]["plan"]["pruning_loc"]) == 1  # measured: 56 or 57 of 100 patches
    assert abs(d["token_keep"][0] - r["meta"]["plan"]["token_keep_ratio"]) <= 0.011
    assert len(d["branch_keep"]) == 8 and 0 < d["branch_keep_mean"] <= 1
    assert set(r["curves"]) == {"predictor", "random", "static"}
    for points in r["curves"].values():
        g = [p["gflops_official"] for p in sorted(points, key=lambda p: p["token_keep_ratio"])]
        assert g == sorted(g)  # keeping more tokens costs more
        assert [p["token_keep_ratio"] for p in points] == r["meta"]["plan"]["sweep"]
    # ρ = 1 keeps every token whatever the scores: evaluated once, the same point on every curve
    assert r["curves"]["random"][0] == r["curves"]["static"][0] == r["curves"]["predictor"][0]
    assert t["latency_ms"]["b1"] > 0 and r["meta"]["command"] == "dyvm demo --quick"
    speed = r["latency"]  # teacher vs DyVM in interleaved rounds on real test images
    assert speed["images"] == 64 and speed["rounds"] == 7 and set(speed["batches"]) == {"b1", "b64"}
    for v in speed["batches"].values():
        lo, hi = v["time_ratio_range"]
        assert lo <= v["time_ratio_iqr"][0] <= v["time_ratio"] <= v["time_ratio_iqr"][1] <= hi
        assert abs(v["latency_cut"] - (1 - v["time_ratio"])) < 1e-12
    text = (report / "report.md").read_text()
    assert f"{t['top1']:.2f}" in text and f"{d['top1']:.2f}" in text  # the report shows the JSON's numbers
    assert "A smoke run" in text and "← departs" in text and "trained random pruning" in text
    assert "their training masks are nested per image" in text  # the baselines' departure is named
    assert "black 40-px canvas" in text and "(100 tokens)" in text and "`--keep-guidance`, a departure" in text
    assert f"{speed['batches']['b64']['time_ratio']:.3f}" in text  # the latency table shows the JSON's ratio
    assert not [p for p in os.listdir(report.parent) if p.startswith(".dyvm-demo-")]  # no temp folder left


def test_viz_renders_an_image_file(report, tmp_path):
    images = read_idx(os.path.join(FASHION_MNIST_DIRS[0], "t10k-images-idx3-ubyte.gz"))
    Image.fromarray(images[0]).save(tmp_path / "boot.png")
    out = tmp_path / "overlay.png"
    ckpt = report / "checkpoints" / "dyvm" / "best.pth"
    proc = subprocess.run([sys.executable, "-m", "dyvm", "viz", str(tmp_path / "boot.png"), "--checkpoint", str(ckpt),
                           "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Image.open(out) as im:
        assert im.format == "PNG"
    bad = subprocess.run([sys.executable, "-m", "dyvm", "viz", str(tmp_path / "missing.png"), "--checkpoint", str(ckpt)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "missing.png" in bad.stderr.strip().splitlines()[-1]


def test_demo_baseline_masks_option():
    """--baseline-masks picks the trained baselines' training masks; a bad value is refused before any work, and
    the report says which masks were used."""
    from dyvm.demo import _masks_sentence, run_demo

    with pytest.raises(ValueError, match="--baseline-masks"):
        run_demo("unused", baseline_masks="batch")
    assert "official ablation's" in _masks_sentence({"baseline_masks": "official"})
    assert "nested per image" in _masks_sentence({})  # results.json files written before the option


def test_failed_demo_leaves_no_half_report(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "dyvm", "demo", "--quick", "--output", str(out),
                           "--data-path", str(tmp_path / "nothing")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--data-path" in proc.stderr.strip().splitlines()[-1]
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".dyvm-demo-")]


def test_demo_plans_guide_dyvm_alone_on_the_canvas():
    """Each fine-tune's options: all three on the demo's canvas with the same budget; only DyVM's predictor is guided
    by the teacher (the baselines have none); `--recipe paper` trains the paper's predictor, unguided."""
    from dyvm.demo import CANVAS, demo_plan, finetune_options

    plan = demo_plan("default")
    runs = {score: finetune_options(plan, "teacher.pth", score) for score in ("predictor", "random", "static")}
    for score, options in runs.items():
        assert (options["score"], options["canvas"], options["img_size"]) == (score, CANVAS, CANVAS)
        assert (options["epochs"], options["pruning_loc"], options["token_keep_ratio"]) == (1, [2], 0.57)
        assert ("keep_guidance" in options) == (score == "predictor")
        assert options.get("baseline_masks") == (None if score == "predictor" else "nested")
    assert (runs["predictor"]["keep_guidance"], runs["predictor"]["keep_ratio_source"]) == (1.0, "probabilities")
    paper = finetune_options(demo_plan("default", recipe="paper"), "teacher.pth")
    assert paper["recipe"] == "paper" and "keep_guidance" not in paper and "keep_ratio_source" not in paper
    assert demo_plan("long").finetune_epochs > demo_plan("default").finetune_epochs
    with pytest.raises(ValueError, match="finetune_epochs"):
        demo_plan("default", finetune_epochs=0)
