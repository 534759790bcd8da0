"""One-off A/B of commit ca9df40's CPU-autocast upcast in BiMambaMixer.mix (what made bf16-upcast-ab.json).

Run from a checkout of ca9df40 (the arm "bf16 before" is that commit's mix with the upcast lines cut out by
source, "bf16 upcast" the commit's own): `python docs/speed/2026-12-01-intel/bf16_upcast_ab.py`. One process,
Vim-T at batch 1 and 8, fp32 vs both bf16 arms in 7 interleaved rounds (dyvm.timing.interleave), 1 thread.
"""
import torch, sys, inspect, textwrap
from dyvm.models.registry import create_model
from dyvm.models import vim as vim_mod
from dyvm.timing import interleave, timed, format_comparison
torch.set_num_threads(1)
new_mix = vim_mod.BiMambaMixer.mix
src = textwrap.dedent(inspect.getsource(new_mix))
cut = src.index('    if xz.device.type == "cpu" and xz.dtype in')
end = src.index('    x, z = split_xz(xz)')
old_src = src[:cut - 4 * 0] + src[end:]
ns = dict(vim_mod.__dict__)
exec(textwrap.dedent(old_src), ns)
old_mix = ns["mix"]
assert "xz.float()" not in old_src
groups = {}
for name, bs in [("vim_tiny", 1), ("vim_tiny", 8)]:
    m = create_model(name).eval()
    x = torch.randn(bs, 3, 224, 224)
    def arm(mix, m=m, x=x):
        def f():
            vim_mod.BiMambaMixer.mix = mix
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16): m(x)
        return timed(f)
    def fp32(m=m, x=x):
        def f():
            with torch.no_grad(): m(x)
        return timed(f)
    groups[f"{name} b{bs}"] = {"fp32": fp32(), "bf16 before": arm(old_mix), "bf16 upcast": arm(new_mix)}
res = interleave(groups, rounds=7)
print(format_comparison(res, clock="cpu"))
import json; json.dump(res, open("bf16-upcast-ab.json", "w"))
