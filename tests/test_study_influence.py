"""The attribution study's oracle selection (scripts/study.py, tenth round) ranks tokens by their influence on the
class token; its closed form must equal the scan itself run on one token's input at a time."""
import importlib.util
import os

import torch
import torch.nn.functional as F

import dyvm
from dyvm.kernels import selective_scan

STUDY = os.path.join(os.path.dirname(__file__), "..", "scripts", "study.py")


def _study():
    spec = importlib.util.spec_from_file_location("study", STUDY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_token_influence_equals_the_scan_one_token_at_a_time():
    study = _study()
    torch.manual_seed(0)
    mixer = dyvm.create_model("vim_tiny", img_size=16, patch_size=4, depth=1, embed_dim=32).layers[0].mixer.eval()
    with torch.no_grad():
        for A_log in (mixer.A_log, mixer.A_b_log):  # trained-looking decay rates, not the init's 1..N
            A_log.add_(torch.randn_like(A_log) * 0.5)
        u = torch.randn(2, 17, 32)
        position = 8
        fast = study.token_influence(mixer, u, position, chunk=1)
        x, z = mixer.in_proj(u).chunk(2, -1)
        slow = torch.zeros(2, 17)
        for j in range(17):
            y = 0
            for backward in (False, True):
                s = "_b" if backward else ""
                inp, delta, B, C = mixer._ssm_inputs(backward, x.transpose(1, 2), None)
                only = torch.zeros_like(inp)
                only[..., j] = inp[..., j]
                A = -torch.exp(getattr(mixer, "A_b_log" if backward else "A_log"))
                y = y + selective_scan(only, delta, A, B.transpose(1, 2), C.transpose(1, 2), torch.zeros_like(mixer.D),
                                       z.transpose(1, 2), getattr(mixer, "dt_proj" + s).bias, delta_softplus=True,
                                       backend="reference", reverse=backward)
            slow[:, j] = (F.linear(y.transpose(1, 2)[:, position], mixer.out_proj.weight) / 2).norm(dim=-1)
    assert torch.allclose(fast, slow, rtol=1e-4, atol=1e-7)
    assert (slow[:, :position].sum() > 0) and (slow[:, position + 1:].sum() > 0)  # both directions reach it
