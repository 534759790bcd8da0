"""A trained DyVM against its Vim teacher at inference, on the canvas test images: the demo's interleaved rounds
(dyvm.evaluate.teacher_vs_student, the first 64 test images) at batch 1 and 64, with the DyVM's official FLOPs cut
from its record, and issue 10's bar (time ratio <= 1 - 0.9 x FLOPs cut). Run it alone (no other torch process).

Usage: python docs/study/twentyfourth/latency.py TEACHER.pth DYVM.pth RECORD.json CANVAS [OUT.json]
"""
import json
import sys

import torch

from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import _latency, _test_loader

teacher_path, dyvm_path, record_path, canvas = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(2)
teacher, _ = model_from_checkpoint(teacher_path)
student, _ = model_from_checkpoint(dyvm_path)
teacher.eval(), student.eval()
with torch.no_grad():
    timing = _latency(teacher, student, _test_loader(teacher, None, 64, batch_size=64, canvas=canvas))
flops_cut = json.load(open(record_path))["flops_cut"]
bar = 1 - 0.9 * flops_cut
out = dict(teacher=teacher_path, dyvm=dyvm_path, canvas=canvas, flops_cut=flops_cut, time_ratio_bar=bar,
           batches={k: dict(v, meets_bar=v["time_ratio"] <= bar) for k, v in timing["batches"].items()},
           rounds=timing["rounds"], threads=timing["threads"], command="python " + " ".join(sys.argv))
print(json.dumps(out, indent=1))
if len(sys.argv) > 5:
    json.dump(out, open(sys.argv[5], "w"), indent=1)
