"""Where the demo DyVM's time goes: the teacher against DyVM variants of one checkpoint, interleaved in one process
(20 forwards per arm and round; random-normal images). Usage: python decompose_demo.py TEACHER DYVM THREADS ROUNDS
[BATCH]. Arms: dyvm (as trained), no_routers (every branch on), rho1 (the stages run and keep every token),
no_stages (no token pruning, routers on), bare (neither)."""
import sys, time, copy, torch, statistics as st
from dyvm.checkpoint import model_from_checkpoint
from dyvm.utils import retain_freed_memory
retain_freed_memory()
torch.set_num_threads(int(sys.argv[3]))
teacher = model_from_checkpoint(sys.argv[1])[0].eval()
dyvm = model_from_checkpoint(sys.argv[2])[0].eval()
def variant(**kw):
    m = copy.deepcopy(dyvm)
    for k, v in kw.items():
        if k == "rho": m.configure(token_keep_ratio=v)
        else: setattr(m, k, v)
    return m
arms = {"teacher": teacher, "dyvm": dyvm,
        "no_routers": variant(use_routers=False),
        "rho1": variant(rho=1.0),
        "no_stages": variant(pruning_loc=[]),
        "bare": variant(pruning_loc=[], use_routers=False)}
B = int(sys.argv[5]) if len(sys.argv) > 5 else 1
x = torch.randn(B, 1, 28, 28)
res = {k: [] for k in arms}
with torch.no_grad():
    for m in arms.values():
        for _ in range(5): m(x)
    for r in range(int(sys.argv[4])):
        for k, m in (arms.items() if r % 2 == 0 else reversed(list(arms.items()))):
            s = time.perf_counter()
            for _ in range(20): m(x)
            res[k].append((time.perf_counter() - s) / 20)
for k in res:
    print(f"{k:12s} {st.median(res[k])*1e3:7.3f} ms  /teacher {st.median([a/b for a,b in zip(res[k], res['teacher'])]):.3f}")
