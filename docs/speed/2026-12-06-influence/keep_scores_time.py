"""Time of the guided teacher pass on the canvas demo's shapes (batch 128, 40-px images, the shipped canvas teacher):
the plain teacher outputs, the forward with every layer's residual, the keep scores of one stage before layer 2
(influence at layers 2-7), one layer's influence, and the whole guided pass. Medians of five calls, 2 threads.
Run alone: python docs/speed/2026-12-06-influence/keep_scores_time.py"""
import time, torch
from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import TEACHER_FILE
from dyvm.losses import teacher_outputs, teacher_keep_scores
torch.set_num_threads(2)
t, _ = model_from_checkpoint(TEACHER_FILE); t.eval()
x = torch.randn(128, 1, 40, 40)
def tm(f, n=5):
    f(); ts=[]
    for _ in range(n):
        a=time.perf_counter(); f(); ts.append(time.perf_counter()-a)
    ts.sort(); return ts[n//2]
with torch.no_grad():
    out = t.forward_detailed(x, return_layers=True)
    for r in range(2):
        print("plain teacher_outputs", tm(lambda: teacher_outputs(t, x, None)))
        print("forward_detailed layers", tm(lambda: t.forward_detailed(x, return_layers=True)))
        print("keep scores [2]", tm(lambda: teacher_keep_scores(t, out.layer_residual, [2])))
        print("influence one layer", tm(lambda: t.class_token_influence(out.layer_residual, [2])))
        print("guided teacher_outputs", tm(lambda: teacher_outputs(t, x, [2])))
