"""dyvm: Dynamic Vision Mamba (DyVM, arXiv 2504.04787) on CPUs and GPUs.

    import dyvm
    model = dyvm.create_model("vim_small", checkpoint_path="vim_s_midclstok_80p5acc.pth")
"""
__version__ = "0.1.0"

from .checkpoint import LoadReport, load_checkpoint
from .models import DyVM, VisionMamba, create_model, list_models

__all__ = ["DyVM", "LoadReport", "VisionMamba", "__version__", "create_model", "list_models", "load_checkpoint"]
