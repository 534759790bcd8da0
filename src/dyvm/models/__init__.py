"""Model families: Vim (the backbone) and DyVM (the dynamic model built on it)."""
from .dyvm import DyVM, DyVMInferenceOutput, DyVMTrainOutput, dyvm_vim_base, dyvm_vim_small, dyvm_vim_tiny
from .registry import create_model, list_models, register_model
from .vim import BiMambaMixer, Block, VimOutput, VisionMamba, vim_base, vim_small, vim_tiny

__all__ = ["BiMambaMixer", "Block", "DyVM", "DyVMInferenceOutput", "DyVMTrainOutput", "VimOutput",
           "VisionMamba", "create_model", "dyvm_vim_base", "dyvm_vim_small", "dyvm_vim_tiny", "list_models",
           "register_model", "vim_base", "vim_small", "vim_tiny"]
