import os
import shutil
from pathlib import Path

import pytest
import torch

ORACLE = Path(__file__).parent / "oracle"
torch.set_num_threads(min(2, os.cpu_count() or 1))


def available_backends() -> list[str]:
    """Scan backends to test here: reference, torch, and cpp where a compiler exists."""
    from dyvm.kernels import scan_cpp

    names = ["reference", "torch"]
    if scan_cpp.available():
        names.append("cpp")
    elif shutil.which(os.environ.get("CXX", "c++")):
        raise RuntimeError(f"a C++ compiler exists but the cpp scan backend failed: {scan_cpp.build_error()}")
    return names


@pytest.fixture(scope="session")
def fashion_mnist() -> str:
    """Debian's Fashion-MNIST folder. A test that needs it FAILS (never skips) where it is missing."""
    from dyvm.data import FASHION_MNIST_DIRS, FASHION_MNIST_FIX

    if not os.path.isdir(FASHION_MNIST_DIRS[0]):
        pytest.fail(f"Fashion-MNIST is missing ({FASHION_MNIST_DIRS[0]}); install it: {FASHION_MNIST_FIX}", pytrace=False)
    return FASHION_MNIST_DIRS[0]


@pytest.fixture(scope="session")
def oracle():
    cache = {}

    def load(name: str):
        if name not in cache:
            cache[name] = torch.load(ORACLE / f"{name}.pt", weights_only=True)
        return cache[name]

    return load
