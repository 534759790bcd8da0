"""Model families: Vim (the backbone), DyVM on it, and the variants (VideoMamba, MambaReg,
the segmentation backbone). Importing this package registers every factory."""
from .config import ModelConfig
from .dyvm import DyVM, DyVMInferenceOutput, DyVMTrainOutput, StageSlots, dyvm_vim_base, dyvm_vim_small, dyvm_vim_tiny
from .mambareg import DyVMMambaReg, MambaReg
from .registry import create_model, list_models, register_model
from .segmentation import DenseOutput, DyVMSeg, VimSeg
from .tokens import PrefixLayout, TokenSequence
from .videomamba import DyVMVideoMamba, VideoMamba
from .vim import BiMambaMixer, Block, VimOutput, VisionMamba, vim_base, vim_small, vim_tiny

__all__ = ["BiMambaMixer", "Block", "DyVM", "DyVMInferenceOutput", "DyVMMambaReg", "DyVMTrainOutput",
           "DyVMSeg", "DyVMVideoMamba", "DenseOutput", "VimSeg", "ModelConfig", "MambaReg", "PrefixLayout", "StageSlots",
           "TokenSequence", "VideoMamba", "VimOutput",
           "VisionMamba", "create_model", "dyvm_vim_base", "dyvm_vim_small", "dyvm_vim_tiny", "list_models",
           "register_model", "vim_base", "vim_small", "vim_tiny"]
