"""The peer of ``dyvm bench --what peers``: Vision Mamba built on mambapy (``pip install "dyvm[bench]"``).

mambapy 1.2 ships the bidirectional Vim backbone (``mambapy.vim.VMamba``: shared ``in_proj`` /
``out_proj``, per-direction conv, ``x_proj``, ``dt_proj``, A and D, output ``(y_f + y_b) / 2``, its
parallel scan in pure PyTorch) but no image model around it. :func:`mambapy_vim` adds the Vim-T
wrapping of the official model: 16×16 patch embedding, the class token in the middle of the 196
patches (197 tokens), a learned position embedding, the final RMSNorm and the linear head on the
class token. Its parameter count equals ``vim_tiny``'s (7,148,008 at the defaults).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

INSTALL_HINT = "--what peers needs mambapy (the peer implementation): pip install 'dyvm[bench]' (or: pip install mambapy)"


class MambapyVim(nn.Module):
    """Vim with mambapy's backbone. Input (B, C, H, W) → logits (B, num_classes)."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 192,
                 depth: int = 24, d_state: int = 16, num_classes: int = 1000):
        super().__init__()
        try:
            from mambapy.vim import MambaConfig, RMSNorm, VMamba
        except ImportError:
            raise ValueError(INSTALL_HINT) from None
        self.in_chans, self.img_size = in_chans, img_size
        self.num_patches = (img_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        config = MambaConfig(d_model=embed_dim, n_layers=depth, d_state=d_state, expand_factor=2, d_conv=4,
                             bidirectional=True, divide_output=True, bias=False, conv_bias=True)
        self.backbone = VMamba(config)
        self.norm_f = RMSNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)                 # (B, M, D)
        mid = self.num_patches // 2
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([tokens[:, :mid], cls, tokens[:, mid:]], dim=1) + self.pos_embed    # (B, M+1, D)
        return self.head(self.norm_f(self.backbone(tokens))[:, mid])


def mambapy_vim(**kwargs) -> MambapyVim:
    """The mambapy peer of ``vim_tiny`` (keywords as :class:`MambapyVim`); ValueError naming the extra
    to install when mambapy is missing."""
    return MambapyVim(**kwargs)
