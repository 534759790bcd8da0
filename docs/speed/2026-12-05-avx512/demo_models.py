"""The demo's shipped teacher and session 29's demo DyVM (/work/runs/demo-s29, not in the repository) at inference
in this build: DyVM / teacher time in interleaved rounds (dyvm.evaluate.teacher_vs_student, what `dyvm demo`
reports), on the first 64 Fashion-MNIST test images. Usage (from a checkout's root): PYTHONPATH=src python
docs/speed/2026-12-05-avx512/demo_models.py [DYVM_CHECKPOINT]"""
import sys

import torch

from dyvm.evaluate import load_for_eval, teacher_vs_student


def load(path):
    m = load_for_eval(path, None)
    return (m[0] if isinstance(m, tuple) else m).eval()


teacher = load("src/dyvm/assets/fashion_mnist_vim_teacher.pth")
student = load(sys.argv[1] if len(sys.argv) > 1 else "/work/runs/demo-s29/checkpoints/dyvm/best.pth")
from dyvm.data import build_dataset, build_transform, data_config_for  # noqa: E402

ds = build_dataset("fashion-mnist", "test", build_transform(data_config_for(teacher), False), None, teacher.in_chans)
images = torch.stack([ds[i][0] for i in range(64)])
with torch.inference_mode():
    out = teacher_vs_student(teacher, student, images, (1, 64), rounds=7)
for key, v in out["batches"].items():
    print(f"{key}: teacher {v['teacher_ms']:.3f} ms, DyVM {v['dyvm_ms']:.3f} ms, DyVM/teacher {v['time_ratio']:.3f} "
          f"(IQR {v['time_ratio_iqr'][0]:.3f}-{v['time_ratio_iqr'][1]:.3f})")
