"""Numerical kernels of the Vim mixer: RMSNorm, causal depthwise conv1d, selective scan."""
from . import mix_cpp  # noqa: F401 (registers dyvm::token_predictor, which exported programs may call)
from .conv import causal_conv1d
from .norm import rms_norm
from .scan import BACKENDS, resolve_backend, selective_scan, selective_scan_reference

__all__ = ["BACKENDS", "causal_conv1d", "resolve_backend", "rms_norm", "selective_scan",
           "selective_scan_reference"]
