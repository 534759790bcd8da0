"""Loading official-format checkpoints, safetensors, pos_embed resizing, bad checkpoints."""
import argparse
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

import dyvm
from dyvm.checkpoint import resize_pos_embed


def tiny(**kw):
    cfg = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_classes=10)
    cfg.update(kw)
    return dyvm.create_model("vim_tiny", **cfg)


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_pth_with_namespace(tmp_path):
    src = tiny()
    path = tmp_path / "vim_t_midclstok.pth"
    torch.save({"model": src.state_dict(), "args": argparse.Namespace(lr=5e-4, model="vim_tiny"),
                "epoch": 299, "optimizer": {"state": {}}}, path)
    dst = tiny()
    report = dyvm.load_checkpoint(dst, path)
    assert same_weights(src, dst) and not report.missing and not report.unexpected
    loaded = dyvm.create_model("vim_tiny", checkpoint_path=str(path), img_size=32, patch_size=8, depth=2,
                               embed_dim=32, num_classes=10)
    assert same_weights(src, loaded)


def test_module_prefix_ema_and_safetensors(tmp_path):
    src, ema = tiny(), tiny()
    path = tmp_path / "ddp.pth"
    torch.save({"model": {"module." + k: v for k, v in src.state_dict().items()},
                "model_ema": ema.state_dict()}, path)
    dst = tiny()
    dyvm.load_checkpoint(dst, path)
    assert same_weights(src, dst)
    dyvm.load_checkpoint(dst, path, key="model_ema")
    assert same_weights(ema, dst)
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, st)
    dyvm.load_checkpoint(dst, st)
    assert same_weights(src, dst)
    bare = tmp_path / "bare.pt"
    torch.save(ema.state_dict(), bare)
    dyvm.load_checkpoint(dst, bare)
    assert same_weights(ema, dst)


def test_pos_embed_resize_keeps_class_row(tmp_path):
    src = tiny()  # 4x4 grid
    dst = tiny(img_size=48)  # 6x6 grid
    report = dyvm.load_checkpoint(dst, {"model": src.state_dict()})
    assert report.resized == ["pos_embed"]
    assert torch.equal(dst.pos_embed[0, 36 // 2], src.pos_embed[0, 16 // 2])
    back = resize_pos_embed(src.pos_embed.detach(), 16)
    assert torch.allclose(back, src.pos_embed.detach(), atol=1e-5)  # identity when the grid is the same
    dst(torch.randn(1, 3, 48, 48))


def test_head_with_other_class_count(tmp_path):
    src = tiny(num_classes=1000)
    dst = tiny(num_classes=10)
    with pytest.raises(ValueError, match="skip_mismatched_head"):
        dyvm.load_checkpoint(dst, {"model": src.state_dict()})
    report = dyvm.load_checkpoint(dst, {"model": src.state_dict()}, skip_mismatched_head=True)
    assert report.skipped_head == ["head.weight", "head.bias"]
    assert torch.equal(dst.layers[0].mixer.in_proj.weight, src.layers[0].mixer.in_proj.weight)


def test_wrong_size_and_missing_keys(tmp_path):
    with pytest.raises(ValueError, match="another model size"):
        dyvm.load_checkpoint(tiny(), {"model": tiny(embed_dim=64).state_dict()})
    sd = tiny().state_dict()
    sd.pop("norm_f.weight")
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="norm_f.weight.*extra.weight"):
        dyvm.load_checkpoint(tiny(), {"model": sd})
    report = dyvm.load_checkpoint(tiny(), {"model": sd}, strict=False)
    assert report.missing == ["norm_f.weight"] and report.unexpected == ["extra.weight"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        dyvm.load_checkpoint(tiny(), tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="another architecture"):
        dyvm.load_checkpoint(tiny(), {"model": {"fc.weight": torch.zeros(2, 2)}})


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_arbitrary_code_is_never_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": {}, "payload": _Evil()}, f)
    with pytest.raises(ValueError, match="weights-only"):
        dyvm.load_checkpoint(tiny(), path)


def test_atomic_write_to_a_directory_is_a_clear_error(tmp_path):
    from dyvm.checkpoint import atomic_write

    with pytest.raises(ValueError, match="is a directory"):
        atomic_write(tmp_path, lambda tmp: open(tmp, "w").write("x"))
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
