"""``dyvm bench`` modes end to end at the smallest settings (one round, one call): what they report,
the mambapy peer's shape, and the one-line errors. Nothing here asserts a speed."""
import json
import sys

import pytest
import torch

from dyvm import bench, evaluate
from dyvm.bench_peers import INSTALL_HINT, mambapy_vim
from dyvm.cli import main
from dyvm.models import create_model

FAST = dict(rounds=1, repeats=1, warmup=0, progress=False, threads=1)


def test_dyvm_mode_reports_latency_and_flops_cut_per_row():
    res = bench.bench_dyvm(sizes=("tiny",), batch_sizes=(1,), **FAST)
    (row,) = res["rows"]
    assert (row["size"], row["batch"]) == ("tiny", 1)
    assert 0 < row["flops_reduction_official"] < 1 and 0 < row["branch_keep"] < 1
    for clock in ("wall", "cpu"):
        lo, hi = row[f"latency_reduction_{clock}_range"]
        assert lo <= row[f"latency_reduction_{clock}"] <= hi
        assert row[f"acceleration_{clock}"] == pytest.approx(1 / (1 - row[f"latency_reduction_{clock}"]))
    assert [arm for _, _, arm in res["result"]["calls"]] == ["Vim", "DyVM"]
    assert "latency cut / FLOPs cut" in res["table"].splitlines()[0]


def test_matmul_floor_stubs_the_scan_in_the_fused_and_the_python_mixer(monkeypatch):
    """The backbone table's floor replaces every scan by its input u, also inside the fused inference
    mixer (one extension call per layer), so the floor is the same model with the scan alone removed."""
    from dyvm.models import vim as vim_mod

    torch.manual_seed(0)
    model = create_model("dyvm_vim_tiny", img_size=32, patch_size=8, depth=3, embed_dim=32, num_classes=5,
                         pruning_loc=[1, 2]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        real = model(x)
        with bench.stub_scan():
            fused = model(x)
            monkeypatch.setattr(vim_mod.BiMambaMixer, "fused_call", lambda *a, **k: None)
            monkeypatch.setattr(vim_mod.VisionMamba, "fused_stack", lambda *a, **k: None)
            python = model(x)
    assert torch.equal(fused, python) and not torch.allclose(fused, real)


def test_image_runner_walks_real_images_a_batch_per_call():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return x

    images = torch.arange(3 * 2 * 2, dtype=torch.float32).view(3, 1, 2, 2)
    evaluate.image_runner(Recorder(), images, 1)(4)
    assert [int(x[0, 0, 0, 0]) for x in seen] == [0, 4, 8, 0] and all(x.shape[0] == 1 for x in seen)
    seen.clear()
    evaluate.image_runner(Recorder(), images, 2)(2)  # 3 images: one whole batch of 2, then from the first again
    assert all(torch.equal(x, images[:2]) for x in seen)
    seen.clear()
    more = torch.arange(7 * 4, dtype=torch.float32).view(7, 1, 2, 2)
    evaluate.image_runner(Recorder(), more, 3)(3)  # batches of 3 from 7 images: 0-2, 3-5, then 0-2 again
    assert [torch.equal(x, more[i:i + 3]) for x, i in zip(seen, (0, 3, 0))] == [True] * 3
    with pytest.raises(ValueError, match="batch 4 needs at least 4 images"):
        evaluate.image_runner(Recorder(), images, 4)


def test_teacher_vs_student_reports_each_batch():
    torch.manual_seed(0)
    kw = dict(img_size=16, patch_size=4, depth=4, embed_dim=16, num_classes=3)
    teacher, student = create_model("vim_tiny", **kw), create_model("dyvm_vim_tiny", **kw)
    res = evaluate.teacher_vs_student(teacher, student, torch.randn(4, 3, 16, 16), batch_sizes=(1, 4), rounds=2)
    assert set(res["batches"]) == {"b1", "b4"} and res["rounds"] == 2 and res["images"] == 4
    for v in res["batches"].values():
        assert v["teacher_ms"] > 0 and v["dyvm_ms"] > 0 and v["latency_cut"] == 1 - v["time_ratio"]


def test_throughput_mode_table():
    res = bench.bench_dyvm(sizes=("tiny",), batch_sizes=(2,), throughput=True, **FAST)
    head, _, line = res["table"].splitlines()
    assert "Vim img/s" in head and "acceleration" in head and line.count("×") == 2


def test_compile_mode_compiles_both_arms_and_counts_masked_branches(monkeypatch):
    """--compile: both models go through torch.compile (CUDA graphs only on CUDA), and the FLOPs cut is
    what compiled DyVM computes: every branch (masked), so only the token pruning saves."""
    modes = []

    def fake_compile(model, mode=None):
        modes.append((type(model).__name__, mode))
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    res = bench.bench_dyvm(sizes=("tiny",), batch_sizes=(1,), compile=True, **FAST)
    assert sorted(modes) == [("DyVM", None), ("VisionMamba", None)]
    (row,) = res["rows"]
    eager = bench.flops_cut("tiny", 0.8)
    assert row["branch_keep_computed"] == 1.0 and row["branch_keep"] == eager["branch_keep"] < 1
    assert 0 < row["flops_reduction_official"] < eager["official"]
    bench.compiled(torch.nn.Identity(), torch.device("cuda"))
    assert modes[-1] == ("Identity", "reduce-overhead")


def test_dtype_mode_runs_fp32_and_bf16_arms():
    res = bench.bench_dtype(models=("vim_tiny",), batch_sizes=(1,), **FAST)
    g = res["result"]["groups"]["vim_tiny b1"]
    assert list(g["arms"]) == ["fp32", "bf16"] and g["baseline"] == "fp32" and set(g["ratios"]) == {"bf16"}


def test_bf16_autocast_forward_stays_close_to_fp32():
    torch.manual_seed(0)
    model = create_model("vim_tiny", img_size=32, patch_size=8, depth=2, embed_dim=32, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        with bench.autocast_context(torch.device("cpu"), "bf16"):
            low = model(x)
    assert low.dtype == torch.bfloat16
    assert torch.allclose(low.float(), ref, atol=0.05, rtol=0.05) and not torch.equal(low.float(), ref)
    with pytest.raises(ValueError, match="--dtype"):
        bench.autocast_context(torch.device("cpu"), "fp8")


def test_peer_is_vim_tiny_sized():
    peer = mambapy_vim()
    ours = create_model("vim_tiny")
    assert sum(p.numel() for p in peer.parameters()) == sum(p.numel() for p in ours.parameters())
    assert peer.pos_embed.shape == ours.pos_embed.shape == (1, 197, 192) and len(peer.backbone.layers) == 24
    small = mambapy_vim(img_size=32, patch_size=8, depth=2, embed_dim=32, num_classes=5).eval()
    with torch.no_grad():
        assert small(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_peers_without_mambapy_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mambapy.vim", None)          # import mambapy.vim → ImportError
    assert main(["bench", "--what", "peers", "--threads", "1", "--rounds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"dyvm bench: error: {INSTALL_HINT}"


@pytest.mark.parametrize("argv, needle", [
    (["--what", "peers", "--throughput"], "--throughput"),
    (["--what", "backbone", "--compile"], "--compile"),
    (["--what", "dyvm", "--rounds", "0"], "--rounds"),
    (["--what", "dyvm", "--repeats", "0", "--sizes", "tiny"], "--repeats"),
    (["--what", "dyvm", "--precision", "-0.1"], "--precision"),
    (["--what", "dyvm", "--rounds", "5", "--max-rounds", "4"], "--max-rounds"),
    (["--what", "dyvm", "--precision", "0", "--max-rounds", "9"], "--max-rounds"),
    (["--what", "train-step", "--step-model", "tiny", "--train-batch", "0"], "--train-batch"),
])
def test_bad_arguments_are_one_line_errors(argv, needle, capsys):
    assert main(["bench", "--threads", "1", "--no-progress"] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


@pytest.mark.parametrize("argv, batch", [([], 128), (["--train-batch", "1"], 1), (["--step-model", "tiny"], 8),
                                         (["--step-model", "tiny", "--train-batch", "2"], 2)])
def test_train_step_batch_follows_the_flag_for_either_model(argv, batch, monkeypatch, capsys):
    # the demo's configuration steps at 128 unless --train-batch says otherwise (batch 1: its inference latency)
    import dyvm.bench_train as bench_train

    seen = {}

    def fake(against, rounds, steps, warmup, threads, batch, **kwargs):
        seen.update(batch=batch, model=kwargs["step_model"])
        return dict(step_model=kwargs["step_model"], threads=threads, steps_per_round=steps, warmup=warmup,
                    rounds=rounds, table="", groups={})

    monkeypatch.setattr(bench_train, "bench_train_step", fake)
    monkeypatch.setattr(bench, "rounds_text", lambda res: "")
    assert main(["bench", "--what", "train-step", "--threads", "1", "--no-progress"] + argv) == 0
    assert seen["batch"] == batch and f"(batch {batch};" in capsys.readouterr().out


def test_cli_json_has_the_rounds(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--what", "dtype", "--model", "vim_tiny", "--batch-sizes", "1", "--rounds", "2", "--repeats",
                 "1", "--warmup", "0", "--precision", "0", "--threads", "1", "--no-progress", "--json", str(out)]) == 0
    data = json.loads(out.read_text())["dtype"]
    assert data["result"]["rounds"] == 2 and data["result"]["precision"] is None   # --precision 0: exactly --rounds
    g = data["result"]["groups"]["vim_tiny b1"]
    assert len(g["arms"]["bf16"]["seconds"]["wall"]) == 2 and len(g["ratios"]["bf16"]["cpu"]["speedup"]) == 2
    assert "table" not in data and "fp32 vs bf16" in capsys.readouterr().out


@pytest.mark.parametrize("flags, isa", [("fma avx2", "(AVX2)"), ("avx2 avx512f", "(AVX-512)"),
                                        ("avx2 avx512f avx512_bf16", "(AVX-512, AVX512-BF16)"),
                                        ("avx2 avx512f avx512_bf16 amx_tile amx_bf16", "(AVX-512, AVX512-BF16, AMX-BF16)"),
                                        ("neon", None)])
def test_machine_line_names_the_vector_extensions_that_change_speed(monkeypatch, flags, isa):
    from dyvm import utils

    monkeypatch.setattr(utils, "_cpuinfo", lambda: {"model name": "Some CPU", "flags": flags})
    assert utils.cpu_name() == ("Some CPU" if isa is None else f"Some CPU {isa}")
