# Session 26 record (2026-12-04, AVX2 kind): see measured.txt. Reads the session-24 demo run's DyVM checkpoint under /work/runs.
"""Teacher vs DyVM (the demo's trained checkpoints) on the first 64 real test images, interleaved rounds."""
import json, sys, torch
import pathlib, dyvm
TEACHER = str(pathlib.Path(dyvm.__file__).parent / "assets" / "fashion_mnist_vim_teacher.pth")  # the shipped teacher
from dyvm.evaluate import load_for_eval, teacher_vs_student
from dyvm.data import build_dataset, build_transform, data_config_for
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
bs = tuple(int(b) for b in sys.argv[3].split(",")) if len(sys.argv) > 3 else (1, 64)
load = lambda p: (lambda m: m[0] if isinstance(m, tuple) else m)(load_for_eval(p)).eval()
t = load(TEACHER)
s = load(sys.argv[5] if len(sys.argv) > 5 else "/work/runs/demo-s24-avx2/checkpoints/dyvm/best.pth")
ds = build_dataset("fashion-mnist", "test", build_transform(data_config_for(t), False), None, t.in_chans)
images = torch.stack([ds[i][0] for i in range(64)])
r = teacher_vs_student(t, s, images, bs, rounds=rounds)
for k, v in r["batches"].items():
    print(k, "teacher %.3f ms  dyvm %.3f ms  ratio %.3f IQR %.3f-%.3f" % (v["teacher_ms"], v["dyvm_ms"], v["time_ratio"], *v["time_ratio_iqr"]))
if len(sys.argv) > 4: json.dump(r, open(sys.argv[4], "w"), indent=1)
