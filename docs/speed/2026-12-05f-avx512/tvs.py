"""The demo teacher against a trained DyVM checkpoint on the first 64 Fashion-MNIST test images (dyvm.evaluate.teacher_vs_student).
Usage: python tvs.py BATCHES (e.g. 1,64) DYVM_CKPT [ROUNDS]"""
import sys, torch, json
sys.path.insert(0, __import__("os").path.dirname(__file__))
from real_images import real_images
from dyvm.evaluate import load_for_eval, teacher_vs_student
torch.set_num_threads(2)
from dyvm.demo import TEACHER_FILE
T = load_for_eval(TEACHER_FILE).eval()
S = load_for_eval(sys.argv[2] if len(sys.argv) > 2 else "/work/runs/demo-s32b/checkpoints/dyvm/best.pth").eval()
imgs = real_images(T)
r = teacher_vs_student(T, S, imgs, tuple(int(b) for b in sys.argv[1].split(",")), rounds=int(sys.argv[3]) if len(sys.argv) > 3 else 7)
for k, v in r["batches"].items():
    print(k, f"teacher {v['teacher_ms']:.3f} ms dyvm {v['dyvm_ms']:.3f} ms ratio {v['time_ratio']:.3f} IQR {v['time_ratio_iqr'][0]:.3f}-{v['time_ratio_iqr'][1]:.3f}")
