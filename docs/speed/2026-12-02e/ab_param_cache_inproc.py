"""The per-layer inference cache (BiMambaMixer._derived), on against off, in one process (interleaved rounds by
dyvm.timing.interleave): "off" recomputes in every forward what the cache holds, as the build before the cache did
inside the extension (here from Python, a few µs more a layer). At 42faa70 the cache held A = -exp(A_log) of both
directions and the halved out_proj weight; since the next code commit A only (the halved weight doubled the memory of
out_proj, 113 MB for Vim-B, and is again computed by the extension in every forward).

    python ab_param_cache_inproc.py DYVM_CKPT THREADS ROUNDS"""
import sys
import time

import torch

import dyvm
from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import _test_loader
from dyvm.models.vim import BiMambaMixer
from dyvm.timing import format_comparison, interleave

torch.set_num_threads(int(sys.argv[2]))
cached = BiMambaMixer._derived


def uncached(self, key, source, make):
    with torch.no_grad():
        return make(source)


teacher = model_from_checkpoint("src/dyvm/assets/fashion_mnist_vim_teacher.pth")[0].eval()
dy = model_from_checkpoint(sys.argv[1])[0].eval()
torch.manual_seed(0)
vim_t = dyvm.create_model("vim_tiny").eval()
x64 = next(iter(_test_loader(dy, None, 64, batch_size=64)))[0]
arms = {"teacher b1": (teacher, x64[:1], 300), "dyvm b1": (dy, x64[:1], 300), "teacher b64": (teacher, x64, 10),
        "dyvm b64": (dy, x64, 10), "vim-t b1": (vim_t, torch.randn(1, 3, 224, 224), 5)}


def runner(model, x, reps, method):
    def run(n):
        BiMambaMixer._derived = method
        start, cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            for _ in range(n * reps):
                model(x)
        return {"wall": (time.perf_counter() - start) / reps, "cpu": (time.process_time() - cpu) / reps}
    return run


groups = {name: {"cache on": runner(m, x, r, cached), "cache off": runner(m, x, r, uncached)}
          for name, (m, x, r) in arms.items()}
print(format_comparison(interleave(groups, rounds=int(sys.argv[3]), repeats=1)))
