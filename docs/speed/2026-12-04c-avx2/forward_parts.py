# Session 26 record (2026-12-04, AVX2 kind): see measured.txt. Reads the session-24 demo run's DyVM checkpoint under /work/runs.
import sys, torch, time, collections
import pathlib, dyvm
TEACHER = str(pathlib.Path(dyvm.__file__).parent / "assets" / "fashion_mnist_vim_teacher.pth")  # the shipped teacher
from dyvm.evaluate import load_for_eval
import dyvm.kernels.mix_cpp as mc
import dyvm.models.vim as vim
torch.set_num_threads(1)
which = sys.argv[1]
p = {"t": TEACHER, "s": "/work/runs/demo-s24-avx2/checkpoints/dyvm/best.pth"}[which]
m = load_for_eval(p); m = m[0] if isinstance(m, tuple) else m
m.eval()
acc = collections.Counter()
def wrap(obj, name, label):
    f = getattr(obj, name)
    def g(*a, **k):
        t0 = time.perf_counter(); r = f(*a, **k); acc[label] += time.perf_counter() - t0; return r
    setattr(obj, name, g)
wrap(mc, "stack_forward", "stack_forward(C++)")
wrap(mc, "tree_hooked", "tree_hooked"); vim.tree_hooked = mc.tree_hooked
wrap(mc, "applies", "applies")
import dyvm.models.dyvm as dm; dm.tree_hooked = mc.tree_hooked
for name in ("check_input", "embed_tokens", "fused_stack", "final_norm", "forward_head", "embed_sequence"):
    wrap(m, name, name)
wrap(m.patch_embed, "forward", "patch_embed")
x = torch.randn(1, 1, 28, 28)
with torch.inference_mode():
    for _ in range(50): m(x)
    acc.clear()
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n): m(x)
    tot = time.perf_counter() - t0
print(which, "total %.0f us" % (tot / n * 1e6))
for k, v in acc.most_common(): print("  %-22s %6.0f us" % (k, v / n * 1e6))
