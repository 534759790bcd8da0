"""Model families: Vim (backbone) and DyVM (the dynamic model)."""
from .registry import create_model, list_models, register_model
from .vim import BiMambaMixer, Block, VimOutput, VisionMamba, vim_base, vim_small, vim_tiny

__all__ = ["BiMambaMixer", "Block", "VimOutput", "VisionMamba", "create_model", "list_models",
           "register_model", "vim_base", "vim_small", "vim_tiny"]
