"""Time the demo DyVM with forced branch patterns of equal official FLOPs: skips in late (pruned) layers vs early
(full-length) layers. Usage: python router_place.py TEACHER DYVM THREADS ROUNDS BATCH"""
import copy, sys, torch
from dyvm.checkpoint import model_from_checkpoint
from dyvm.timing import format_comparison, interleave, timed
from dyvm.utils import retain_freed_memory
from dyvm.flops import count_flops
retain_freed_memory()
torch.set_num_threads(int(sys.argv[3]))
teacher = model_from_checkpoint(sys.argv[1])[0].eval()
student = model_from_checkpoint(sys.argv[2])[0].eval()

def forced(off):
    m = copy.deepcopy(student)
    keep = torch.ones(m.depth, 2, dtype=torch.float64)
    for layer in m.layers:
        with torch.no_grad():
            layer.mixer.block_head.weight.zero_(); layer.mixer.block_head.bias.fill_(5.0)
    for i, d in off:
        with torch.no_grad():
            m.layers[i].mixer.block_head.bias[d] = -5.0
        keep[i, d] = 0
    return m, keep

arms = {"teacher": teacher}
for name, off in {"all_on": [], "late_off": [(5, 0), (6, 1), (7, 1)], "early_off": [(1, 1), (2, 0), (3, 1)]}.items():
    m, keep = forced(off)
    arms[name] = m
    print(name, "official GFLOPs %.4f  teacher %.4f" % (
        count_flops(m, "official", branch_keep_ratio=float(keep.mean())), count_flops(teacher, "official")))
batch = int(sys.argv[5])
x = torch.randn(batch, 1, 28, 28)
with torch.no_grad():
    result = interleave({f"batch {batch}": {n: timed(lambda m=m: m(x)) for n, m in arms.items()}},
                        rounds=int(sys.argv[4]))
print(format_comparison(result))
