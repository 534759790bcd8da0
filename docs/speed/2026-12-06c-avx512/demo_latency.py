"""The canvas demo DyVM against its teacher at batch 1, 8 and 64, as `dyvm demo` measures it (dyvm.evaluate.
teacher_vs_student: the first 64 test images, interleaved rounds, wall clock), with more rounds.

Usage: python docs/speed/2026-12-06c-avx512/demo_latency.py DYVM_CKPT [--rounds 11] [--threads 2]
"""
import argparse
import json

import torch

from dyvm.demo import _test_loader, shipped_teacher
from dyvm.evaluate import load_for_eval, teacher_vs_student
from dyvm.utils import retain_freed_memory

parser = argparse.ArgumentParser()
parser.add_argument("dyvm_checkpoint")
parser.add_argument("--rounds", type=int, default=11)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
retain_freed_memory()
torch.set_num_threads(args.threads)
teacher = load_for_eval(shipped_teacher()[0]).eval()
student = load_for_eval(args.dyvm_checkpoint).eval()
images = next(iter(_test_loader(student, None, 64, batch_size=64)))[0]
result = teacher_vs_student(teacher, student, images, (1, 8, 64), rounds=args.rounds)
bar = 1 - 0.9 * 0.3572331777346337  # docs/demo's official FLOPs cut
for key, row in result["batches"].items():
    print(f"{key}: teacher {row['teacher_ms']:.2f} ms, DyVM {row['dyvm_ms']:.2f} ms, DyVM/teacher "
          f"{row['time_ratio']:.3f} (IQR {row['time_ratio_iqr'][0]:.3f}-{row['time_ratio_iqr'][1]:.3f}); "
          f"bar {bar:.3f}: {'met' if row['time_ratio'] <= bar else 'missed'}")
print(json.dumps(result))
