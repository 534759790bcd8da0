"""One-off A/B of the per-image branch selection at inference (commit after df579f3): the previous
``BiMambaMixer._selected_branches`` (sub-batches gathered as x[idx], z[idx], outputs scattered into zero-filled
full-size parts and added) against the new one (one row copy of in_proj's output per sub-batch, outputs added
into y by rows), on the demo's trained DyVM and its teacher, 64 real test images, 1 thread, interleaved rounds.

    python docs/speed/2026-12-01-intel/subbatch_ab.py TEACHER_CKPT DYVM_CKPT OUT.json
"""
import json
import sys

import torch

from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import _test_loader
from dyvm.models import vim as vim_mod
from dyvm.timing import format_comparison, interleave, timed


def old_selected_branches(self, xz, x, z, mask, gates):  # the signature of the current method
    counts = [round(c) for c in gates.sum(0).tolist()]
    y = None
    for backward, n_on in ((False, counts[0]), (True, counts[1])):
        if n_on == 0:
            continue
        if n_on == x.shape[0]:
            part = self._branch(backward, x, z, mask)
        else:
            idx = (gates[:, int(backward)] > 0.5).nonzero().squeeze(1)
            sub = self._branch(backward, x[idx], z[idx], None if mask is None else mask[idx])
            part = sub.new_zeros(x.shape).index_copy_(0, idx, sub)
        y = part if y is None else y + part
    return x.new_zeros(x.shape) if y is None else y


def main() -> None:
    torch.set_num_threads(1)
    teacher, _ = model_from_checkpoint(sys.argv[1])
    dyvm, _ = model_from_checkpoint(sys.argv[2])
    teacher.eval(), dyvm.eval()
    images = next(iter(_test_loader(dyvm, None, 64, batch_size=64)))[0]
    new = vim_mod.BiMambaMixer._selected_branches
    with torch.no_grad():
        same = torch.equal(dyvm(images), (setattr(vim_mod.BiMambaMixer, "_selected_branches", old_selected_branches),
                                          dyvm(images))[1])
    print("old and new give identical logits:", same)

    def arm(model, impl):
        def f():
            vim_mod.BiMambaMixer._selected_branches = impl
            with torch.no_grad():
                model(images)
        return timed(f)

    res = interleave({"b64": {"teacher": arm(teacher, new), "DyVM before": arm(dyvm, old_selected_branches),
                              "DyVM now": arm(dyvm, new)}}, rounds=9)
    print(format_comparison(res, clock="cpu"))
    res["identical_logits"] = same
    with open(sys.argv[3], "w") as fh:
        json.dump(res, fh)


if __name__ == "__main__":
    main()
