"""Share of each stage's kept patches that trained static selection (nested, evenly spaced) also keeps, distinct kept sets
and the most common stage-1 set, on the first 2,000 test images: python docs/study/eighteenth/overlap.py CHECKPOINT"""
import sys, torch
from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import _test_loader
from dyvm.dynamic import select_keep
torch.set_num_threads(2)
m, _ = model_from_checkpoint(sys.argv[1]); m.eval()
loader = _test_loader(m, None, 2000)
counts = m.keep_counts()
# static's nested kept patch ids: evenly spaced among the live ones, stage by stage
live = torch.arange(49)
static = []
for k in counts:
    idx = select_keep("static", None, torch.tensor([live.numel()]), k)[0]
    live = live[idx]; static.append(set(live.tolist()))
hits = [0.0] * len(counts); n = 0; sets = [dict() for _ in counts]
with torch.no_grad():
    for x, y in loader:
        out = m.forward_inference(x)
        for s, ki in enumerate(out.keep_indices):
            for row in ki.tolist():
                hits[s] += len(static[s] & set(row)) / len(row)
                key = tuple(row); sets[s][key] = sets[s].get(key, 0) + 1
        n += x.shape[0]
print("static sets", [sorted(s) for s in static])
print("share of kept patches static also keeps:", [round(h / n, 3) for h in hits])
print("distinct kept sets per stage:", [len(s) for s in sets], "most common share:", [round(max(s.values()) / n, 3) for s in sets])
print("most common stage-1 set:", max(sets[0], key=sets[0].get))
