import sys, time, torch
torch.set_num_threads(1)
from dyvm.models import create_model
B = int(sys.argv[1]); n = int(sys.argv[2])
m = create_model("vim_tiny").eval()
x = torch.randn(B, 3, 224, 224)
with torch.inference_mode():
    for _ in range(3): m(x)
    t = time.perf_counter()
    for _ in range(n): m(x)
    print("ms", (time.perf_counter() - t) / n * 1e3)
