"""Where the canvas demo DyVM's batch-1 time goes against its teacher's, layer by layer (session 46).

1. One block of the shipped teacher (layer 3's weights) as one extension call (`dyvm_scan::block_forward`) at
   batch 1 on 101 tokens (the teacher's length) and 58 (DyVM's after its stage), with both SSM branches, one,
   or none, on one and two threads, interleaved in one process (medians of the rounds, µs).
2. The DyVM's own gates on the first 64 test images (its routers at batch 1) priced with those per-layer costs:
   the time its eight blocks would take if a forward were nothing but its blocks, over the teacher's eight blocks.
   Below that ratio no saving outside the blocks (stage, embedding, head, Python) can bring the whole forward.

Usage: python docs/speed/2026-12-06c-avx512/layer_costs.py DYVM_CKPT [--rounds 9]
"""
import argparse
import statistics
import time

import torch

from dyvm.demo import _test_loader, shipped_teacher
from dyvm.evaluate import load_for_eval
from dyvm.kernels import scan_cpp
from dyvm.utils import retain_freed_memory

parser = argparse.ArgumentParser()
parser.add_argument("dyvm_checkpoint")
parser.add_argument("--rounds", type=int, default=9)
args = parser.parse_args()
retain_freed_memory()
assert scan_cpp.available(), scan_cpp.build_error()
teacher = load_for_eval(shipped_teacher()[0]).eval()
student = load_for_eval(args.dyvm_checkpoint).eval()
mixer, norm_weight = teacher.layers[3].mixer, teacher.layers[3].norm.weight
params = mixer._direction_params(False) + mixer._direction_params(True)
in_weight, out_weight = mixer.in_proj.weight, mixer.out_proj.weight
in_packed, out_packed = mixer.packed_projections()
panels = mixer.all_panels()
block = torch.ops.dyvm_scan.block_forward
kept_length = student.keep_counts()[0] + 1
lengths = (teacher.num_patches + 1, kept_length)
gate_sets = {"both": [[1.0, 1.0]], "forward only": [[1.0, 0.0]], "backward only": [[0.0, 1.0]], "none": [[0.0, 0.0]]}
costs: dict = {}
with torch.inference_mode():
    for _ in range(args.rounds):
        for length in lengths:
            hidden, residual = torch.randn(1, length, teacher.embed_dim), torch.randn(1, length, teacher.embed_dim)
            for name, gates in gate_sets.items():
                g = torch.tensor(gates)
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    call = lambda: block(hidden, residual, norm_weight, 1e-5, in_weight, params[:7], params[7:],  # noqa: E731
                                         out_weight, 0.5, g, [], 0.5, False, in_packed, out_packed, panels)
                    for _ in range(30):
                        call()
                    start = time.perf_counter()
                    for _ in range(300):
                        call()
                    costs.setdefault((length, name, threads), []).append((time.perf_counter() - start) / 300 * 1e6)
cost = {k: statistics.median(v) for k, v in costs.items()}
print("One block at batch 1 (µs, median of the rounds):")
print("| tokens | branches | 1 thread | 2 threads |")
print("|---|---|---|---|")
for length in lengths:
    for name in gate_sets:
        print(f"| {length} | {name} | {cost[(length, name, 1)]:.1f} | {cost[(length, name, 2)]:.1f} |")

# the DyVM's gates per image and layer at batch 1 on the first 64 test images
images = next(iter(_test_loader(student, None, 64, batch_size=64)))[0]
torch.set_num_threads(2)
with torch.inference_mode():
    gates = torch.stack([student.forward_inference(images[i:i + 1], features=False).gates[:, 0] for i in range(64)])
names = {(1, 1): "both", (1, 0): "forward only", (0, 1): "backward only", (0, 0): "none"}
first = student.pruning_loc[0]
for threads in (1, 2):
    teacher_blocks = teacher.depth * cost[(lengths[0], "both", threads)]
    per_image = []
    for g in gates:  # (depth, 2)
        total = 0.0
        for layer, (f, b) in enumerate(g.round().int().tolist()):
            total += cost[(lengths[0] if layer < first else lengths[1], names[(f, b)], threads)]
        per_image.append(total / teacher_blocks)
    print(f"{threads} thread(s): the DyVM's blocks alone / the teacher's blocks, priced per image: "
          f"median {statistics.median(per_image):.3f} (range {min(per_image):.3f}-{max(per_image):.3f})")
print(f"mean branch keep of these images per layer [fwd, bwd]: {gates.mean(0).tolist()}")
