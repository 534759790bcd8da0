"""The demo DyVM's latency floor at its operating point: the teacher with only the layers that DyVM runs on every
token and branch (its first ``pruning_loc[0]`` layers, with the embedding, final norm and head), against the whole
teacher and the demo DyVM, interleaved in one process (dyvm.timing), eval forward on test-sized random batches.

Usage: python docs/speed/2026-12-05j-avx512/demo_floor.py DYVM_CKPT [--batch-sizes 1 64] [--rounds 15]
Where DyVM's pruned layers and stages cost nothing it takes the truncated teacher's time: below that ratio the
latency bar (time <= 1 - 0.9 x the FLOPs cut) cannot be met at this operating point.
"""
import argparse
import torch
from dyvm.bench import inference_runner
from dyvm.demo import shipped_teacher
from dyvm.evaluate import load_for_eval
from dyvm.timing import format_comparison, interleave
from dyvm.utils import retain_freed_memory

parser = argparse.ArgumentParser()
parser.add_argument("dyvm_checkpoint")
parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
parser.add_argument("--rounds", type=int, default=15)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
retain_freed_memory()
torch.set_num_threads(args.threads)
teacher = load_for_eval(shipped_teacher()[0]).eval()
student = load_for_eval(args.dyvm_checkpoint).eval()
first = student.pruning_loc[0]
truncated = load_for_eval(shipped_teacher()[0]).eval()
truncated.layers = truncated.layers[:first]  # the layers DyVM runs on every token (and, in the demo, every branch)
truncated.depth = first
cpu = torch.device("cpu")
groups = {f"batch {b}": {"teacher": inference_runner(teacher, b, cpu), "dyvm": inference_runner(student, b, cpu),
                         f"teacher, layers 0-{first - 1} only": inference_runner(truncated, b, cpu)}
          for b in args.batch_sizes}
result = interleave(groups, rounds=args.rounds, warmup=2, precision=0.02)
print(f"teacher depth {teacher.depth}; DyVM prunes before layers {student.pruning_loc}")
print(format_comparison(result))
print(format_comparison(result, clock="cpu"))
