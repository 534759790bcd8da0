"""A/B of the fused inference blocks (``torch.ops.dyvm_scan.block_forward``: residual add, RMSNorm, in_proj,
the DyVM router and the mixer in one call of the extension per layer) against the Python blocks
(``BiMambaMixer.fused_call`` patched to return None, which turns every fused path off), in
one process, interleaved rounds, 1 thread: the demo's teacher and trained DyVM (real test images) and the
``vim_tiny`` / ``dyvm_vim_tiny`` presets (random weights, 80% of branches on, as ``dyvm bench --what dyvm``).

    python docs/speed/2026-12-01b-intel/fused_block_ab.py TEACHER_CKPT DYVM_CKPT OUT.json [BATCH ...] [--bf16]

--bf16: both arms under CPU bf16 autocast.
"""
import json
import sys

import torch

from dyvm.bench import build_model
from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import _test_loader
from dyvm.models import vim as vim_mod
from dyvm.timing import format_comparison, interleave, timed

FUSED = vim_mod.BiMambaMixer.fused_call


def main() -> None:
    torch.set_num_threads(1)
    teacher, _ = model_from_checkpoint(sys.argv[1])
    dyvm, _ = model_from_checkpoint(sys.argv[2])
    teacher.eval(), dyvm.eval()
    vim_t = build_model("vim_tiny", torch.device("cpu")).eval()
    dyvm_t = build_model("dyvm_vim_tiny", torch.device("cpu"), routers_on=0.8).eval()
    bf16 = "--bf16" in sys.argv
    batches = [int(b) for b in sys.argv[4:] if b != "--bf16"] or [1, 8]
    demo_images = next(iter(_test_loader(dyvm, None, 64, batch_size=64)))[0]
    big_images = torch.randn(max(batches), 3, 224, 224)

    def arm(model, images, fused):
        def f():
            vim_mod.BiMambaMixer.fused_call = FUSED if fused else (lambda *a, **k: None)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(images)
        return timed(f)

    same = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for name, model, images in (("demo teacher", teacher, demo_images), ("demo DyVM", dyvm, demo_images),
                                    ("DyVM-T", dyvm_t, big_images[:8])):
            vim_mod.BiMambaMixer.fused_call = FUSED
            a = model(images)
            vim_mod.BiMambaMixer.fused_call = lambda *a, **k: None
            same[name] = torch.equal(a, model(images))
    print("fused and Python mixers give identical logits:", same)
    groups = {}
    for b in batches:
        for name, model, images in (("demo teacher", teacher, demo_images), ("demo DyVM", dyvm, demo_images),
                                    ("Vim-T", vim_t, big_images), ("DyVM-T", dyvm_t, big_images)):
            groups[f"{name} b{b}"] = {"python": arm(model, images[:b], False), "fused": arm(model, images[:b], True)}
    res = interleave(groups, rounds=7, target_seconds=0.3)
    print(format_comparison(res, clock="cpu"))
    res["identical_logits"] = same
    with open(sys.argv[3], "w") as fh:
        json.dump(res, fh)


if __name__ == "__main__":
    main()
