"""torch.compile / torch.export of Vim and DyVM (issue 10 item 5): the custom ops' fake kernels and
autograd, compiled-vs-eager logits, graph breaks, export → reload in a fresh process, ``dyvm export``."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch._dynamo
import torch._inductor.config

import dyvm
from dyvm.checkpoint import save_checkpoint
from dyvm.cli import main as cli_main
from dyvm.kernels.conv import causal_conv1d
from dyvm.kernels.scan import selective_scan

torch._inductor.config.compile_threads = 1  # no compile-worker pool (the tests run at one thread)
TOL = 1e-5


def tiny_vim() -> torch.nn.Module:
    torch.manual_seed(0)
    return dyvm.create_model("vim_tiny", img_size=16, patch_size=4, depth=2, embed_dim=16, num_classes=3).eval()


def tiny_dyvm(token_sampler: str = "gumbel") -> torch.nn.Module:
    """A DyVM whose routers disagree across images (normal router weights, not the all-on init)."""
    torch.manual_seed(0)
    model = dyvm.create_model("dyvm_vim_tiny", img_size=16, patch_size=4, depth=3, embed_dim=16, num_classes=3,
                              pruning_loc=[1, 2], token_keep_ratio=0.7, token_sampler=token_sampler).eval()
    for layer in model.layers:
        torch.nn.init.normal_(layer.mixer.block_head.weight, std=1.0)
        torch.nn.init.normal_(layer.mixer.block_head.bias, std=1.0)
    return model


def images(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def mixed_gates(model, x) -> bool:
    """Whether some branch runs for some images of x and not for others (eager sub-batching is exercised)."""
    with torch.no_grad():
        on = model.forward_inference(x).gates.sum(1)  # (depth, 2): images running each branch
    return bool(((on > 0) & (on < x.shape[0])).any())


# ----------------------------------------------------------------------------- custom ops
def _scan_args(reverse: bool, channels_last: bool):
    torch.manual_seed(0)
    b, e, length, n = 2, 4, 5, 3
    f64 = dict(dtype=torch.float64)
    u = (torch.randn(b, length, e, **f64).transpose(1, 2) if channels_last else torch.randn(b, e, length, **f64))
    tensors = [u, torch.randn(b, e, length, **f64), -torch.rand(e, n, **f64), torch.randn(b, n, length, **f64),
               torch.randn(b, n, length, **f64), torch.randn(e, **f64), torch.randn(b, e, length, **f64),
               torch.randn(e, **f64)]
    return [t.requires_grad_() for t in tensors] + [True, reverse, None, channels_last]


@pytest.mark.parametrize("reverse,channels_last", [(False, False), (True, True)])
def test_scan_op_fake_kernel_and_autograd(reverse, channels_last):
    args = _scan_args(reverse, channels_last)
    result = torch.library.opcheck(torch.ops.dyvm.selective_scan.default, args)
    assert set(result.values()) == {"SUCCESS"}, result
    out = torch.ops.dyvm.selective_scan(*args)
    ref = selective_scan(*args[:9], backend=None, reverse=reverse)  # the eager dispatch, its own autograd
    assert out.dtype == ref.dtype and out.shape == ref.shape
    assert torch.equal(out, ref)
    grad = torch.randn_like(ref)
    tensors = args[:8]
    mine = torch.autograd.grad(out, tensors, grad)
    theirs = torch.autograd.grad(ref, tensors, grad)
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("with_optional", [True, False])
def test_conv_op_fake_kernel_and_autograd(with_optional):
    torch.manual_seed(0)
    f64 = dict(dtype=torch.float64, requires_grad=True)
    x, w = torch.randn(2, 4, 6, **f64), torch.randn(4, 1, 4, **f64)
    bias = torch.randn(4, **f64) if with_optional else None
    mask = (torch.rand(2, 6) > 0.3).double().requires_grad_() if with_optional else None
    args = (x, w, bias, with_optional, mask, with_optional, with_optional)  # silu, reverse, channels_last
    result = torch.library.opcheck(torch.ops.dyvm.causal_conv1d.default, args)
    assert set(result.values()) == {"SUCCESS"}, result
    out = torch.ops.dyvm.causal_conv1d(*args)
    ref = causal_conv1d(x, w, bias, silu=with_optional, mask=mask, reverse=with_optional, channels_last=with_optional)
    assert torch.equal(out, ref) and out.stride() == ref.stride()
    tensors = [t for t in (x, w, bias, mask) if t is not None]
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, tensors, grad), torch.autograd.grad(ref, tensors, grad)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- torch.compile
def test_compiled_vim_matches_eager_with_no_graph_break():
    model, x = tiny_vim(), images(3)
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(x)
        assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
        assert explained.graph_count == 1
        compiled = torch.compile(model, fullgraph=True)
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=TOL)


@pytest.mark.parametrize("token_sampler", ["gumbel", "stratified"])  # stratified: its own inference selection
def test_compiled_dyvm_matches_eager_with_no_graph_break(token_sampler):
    model, x = tiny_dyvm(token_sampler), images(4)
    assert mixed_gates(model, x)  # eager runs sub-batches; the compiled graph masks instead
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(x)
        assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
        compiled = torch.compile(model, fullgraph=True)
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=TOL)


# ----------------------------------------------------------------------------- torch.export
_RELOAD = """
import sys, torch
import dyvm.kernels  # registers the custom ops torch.export.load needs
for path in sys.argv[1:]:
    program = torch.export.load(path)
    for x, eager in torch.load(path + ".ref", weights_only=True):
        with torch.no_grad():
            diff = (program.module()(x) - eager).abs().max().item()
        print(path, tuple(x.shape), diff)
        assert diff <= 1e-5, diff
"""


def test_export_reloads_in_a_fresh_process_and_matches_eager(tmp_path):
    vim, dy = tiny_vim(), tiny_dyvm()
    assert mixed_gates(dy, images(4, seed=2))
    cases = [(vim, False, [images(2)]), (dy, True, [images(1), images(4, seed=2)])]
    paths = []
    for model, dynamic, inputs in cases:
        path = tmp_path / f"{type(model).__name__}.pt2"
        program = dyvm.export_model(model, images(2, seed=3), path, dynamic_batch=dynamic)
        assert isinstance(program, torch.export.ExportedProgram)
        with torch.no_grad():
            torch.save([(x, model(x)) for x in inputs], str(path) + ".ref")
        paths.append(str(path))
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _RELOAD, *paths], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(proc.stdout.splitlines()) == 3
    # a static-batch program refuses another batch size; the loader helper registers the ops itself
    with pytest.raises(Exception):
        dyvm.load_exported(paths[0]).module()(images(3))


def test_export_model_arguments(tmp_path):
    model = tiny_vim()
    with pytest.raises(ValueError, match="at least 2"):
        dyvm.export_model(model, images(1), dynamic_batch=True)
    with pytest.raises(ValueError, match="is a directory"):
        dyvm.export_model(model, images(1), tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        dyvm.load_exported(tmp_path / "missing.pt2")


# ----------------------------------------------------------------------------- dyvm export
def test_cli_export(tmp_path, capsys):
    model = tiny_dyvm()
    ckpt, out = tmp_path / "dy.pth", tmp_path / "out" / "dy.pt2"
    save_checkpoint(ckpt, model)
    assert cli_main(["export", str(ckpt), str(out), "--batch-size", "2", "--threads", "1"]) == 0
    assert "difference 0.00e+00" in capsys.readouterr().out
    x = images(2, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(dyvm.load_exported(out).module()(x), model(x), rtol=0, atol=TOL)

    (tmp_path / "afile").write_text("")
    bad = [([str(tmp_path / "missing.pth"), str(tmp_path / "x.pt2")], "no such file"),
           ([str(ckpt), str(tmp_path)], "is a directory"),
           ([str(ckpt), str(tmp_path / "afile" / "x.pt2")], "cannot create the folder"),
           ([str(ckpt), str(tmp_path / "y.pt2"), "--batch-size", "0"], "--batch-size")]
    before = sorted(os.listdir(tmp_path))
    for argv, message in bad:
        assert cli_main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and err.startswith("dyvm export: error:"), err
    assert sorted(os.listdir(tmp_path)) == before
