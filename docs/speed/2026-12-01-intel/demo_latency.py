"""The demo report's latency table (teacher vs DyVM on the first 64 test images, 7 interleaved rounds) for two
checkpoints, outside the demo: `python demo_latency.py TEACHER_CKPT DYVM_CKPT THREADS OUT.json`."""
import json, sys, torch
from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import _latency, _test_loader
torch.set_num_threads(int(sys.argv[3]))
t, _ = model_from_checkpoint(sys.argv[1]); d, _ = model_from_checkpoint(sys.argv[2]); t.eval(); d.eval()
res = _latency(t, d, _test_loader(d, None, 64, batch_size=64))
print(json.dumps({k: v for k, v in res.items() if k != "result"}, indent=1, default=str)[:3000])
json.dump(res, open(sys.argv[4], "w"), default=str)
