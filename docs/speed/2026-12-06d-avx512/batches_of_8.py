"""The canvas demo DyVM against its teacher on each of the eight batches of 8 among the first 64 test images
(interleaved: per round, every batch, teacher then DyVM, 20 calls each; medians of the rounds' time ratios), with
each batch's mean branch keep and layers 4-5's [forward, backward] keep.

Usage: python docs/speed/2026-12-06d-avx512/batches_of_8.py DYVM_CKPT [--rounds 7] [--threads 2]
"""
import argparse
import statistics
import time

import torch

from dyvm.demo import _test_loader, shipped_teacher
from dyvm.evaluate import load_for_eval
from dyvm.utils import retain_freed_memory

parser = argparse.ArgumentParser()
parser.add_argument("dyvm_checkpoint")
parser.add_argument("--rounds", type=int, default=7)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
retain_freed_memory()
torch.set_num_threads(args.threads)
teacher = load_for_eval(shipped_teacher()[0]).eval()
student = load_for_eval(args.dyvm_checkpoint).eval()
images = next(iter(_test_loader(student, None, 64, batch_size=64)))[0]
batches = [images[i:i + 8].contiguous() for i in range(0, 64, 8)]
times: dict = {}
with torch.inference_mode():
    for _ in range(args.rounds):
        for k, batch in enumerate(batches):
            for name, model in (("teacher", teacher), ("dyvm", student)):
                for _ in range(3):
                    model(batch)
                start = time.perf_counter()
                for _ in range(20):
                    model(batch)
                times.setdefault((k, name), []).append(time.perf_counter() - start)
    ratios = []
    for k, batch in enumerate(batches):
        keep = student.forward_inference(batch).gates.float().mean(1)
        ratio = statistics.median(d / t for d, t in zip(times[(k, "dyvm")], times[(k, "teacher")]))
        ratios.append(ratio)
        print(f"images {8 * k}-{8 * k + 7}: DyVM/teacher {ratio:.3f}, mean branch keep {float(keep.mean()):.3f}, "
              f"layers 4-5 {[[round(v, 3) for v in row] for row in keep[4:6].tolist()]}")
    print(f"median over the batches {statistics.median(ratios):.3f}")
