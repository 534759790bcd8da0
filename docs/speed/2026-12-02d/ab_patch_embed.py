"""Whole-model forward with the patch embedding as unfold + one matmul against the Conv2d call, interleaved in one
process. Run while PatchEmbed.forward was the unfold + matmul version (not kept: see the README, "Per-image branch
selection without copies"); MATMUL is that method, CONV the Conv2d call. python ab_patch_embed.py THREADS ROUNDS"""
import sys, time, torch, statistics as st
import dyvm
from dyvm.models.vim import PatchEmbed
MATMUL = PatchEmbed.forward
CONV = lambda self, x: self.proj(x).flatten(2).transpose(1, 2)  # the Conv2d call of the earlier builds
class V:  # flag -> PatchEmbed.forward
    def __setattr__(self, k, flag): PatchEmbed.forward = MATMUL if flag else CONV
V = V()
from dyvm.checkpoint import model_from_checkpoint
from dyvm.utils import retain_freed_memory
retain_freed_memory()
torch.set_num_threads(int(sys.argv[1]))
cases = []
teacher = model_from_checkpoint("src/dyvm/assets/fashion_mnist_vim_teacher.pth")[0].eval()
for b in (1, 64): cases.append((f"demo teacher b{b}", teacher, torch.randn(b, 1, 28, 28), 20 if b == 1 else 3))
vt = dyvm.create_model("vim_tiny").eval()
for b in (1, 8, 64): cases.append((f"vim_tiny b{b}", vt, torch.randn(b, 3, 224, 224), 3 if b == 1 else 1))
with torch.no_grad():
    for name, m, x, reps in cases:
        res = {True: [], False: []}
        for flag in (True, False):
            V.PATCH_EMBED_MATMUL = flag; m(x)
        print(name, "max diff", end=" ")
        V.PATCH_EMBED_MATMUL = True; a = m(x); V.PATCH_EMBED_MATMUL = False; b = m(x); print(float((a - b).abs().max()), flush=True)
        for r in range(int(sys.argv[2])):
            for flag in ((True, False) if r % 2 == 0 else (False, True)):
                V.PATCH_EMBED_MATMUL = flag
                s = time.perf_counter()
                for _ in range(reps): m(x)
                res[flag].append((time.perf_counter() - s) / reps)
        rat = [a / b for a, b in zip(res[True], res[False])]
        q = st.quantiles(rat, n=4)
        print(f"{name:18s} matmul/conv time {st.median(rat):.3f} (IQR {q[0]:.3f}-{q[2]:.3f})  conv {st.median(res[False])*1e3:.2f} ms", flush=True)
