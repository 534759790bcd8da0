"""The teacher's eight blocks (one stack_forward call) at sequence lengths 3, 6, 16, 50 and its embedding and whole
forward, interleaved in one process: the fixed and the per-token cost of a block. Usage: python layer_vs_L.py
TEACHER THREADS BATCH"""
import sys, time, torch, statistics as st
from dyvm.checkpoint import model_from_checkpoint
from dyvm.utils import retain_freed_memory
retain_freed_memory()
torch.set_num_threads(int(sys.argv[2]))
t = model_from_checkpoint(sys.argv[1])[0].eval()
B = int(sys.argv[3]) if len(sys.argv) > 3 else 1
Ls = [3, 6, 16, 50]
arms = {}
for L in Ls:
    h = torch.randn(B, L, 64); ids = torch.arange(L - 1)[None].expand(B, -1).contiguous()
    arms[L] = (lambda h=h, ids=ids, L=L: t.fused_stack(h, ids, [[L // 2]]))
x = torch.randn(B, 1, 28, 28)
arms["embed"] = lambda: t.embed_sequence(x)
arms["full"] = lambda: t(x)
res = {k: [] for k in arms}
with torch.no_grad():
    for f in arms.values():
        for _ in range(10): f()
    for r in range(15):
        for k, f in arms.items():
            s = time.perf_counter()
            for _ in range(20): f()
            res[k].append((time.perf_counter() - s) / 20)
for k in res: print(k, f"{st.median(res[k])*1e6:8.1f} us", f"per layer {st.median(res[k])*1e6/8:7.1f}" if isinstance(k, int) else "")
