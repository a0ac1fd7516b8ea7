"""The embeddings of a ``BiXTEncoder``: each maps its input to tokens, where they sit, and which are
valid, and declares its token ``stride`` (None where the tokens have no grid)."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from ...archs import ArchSetting, resolve_arch
from .tokenizers import FourierPositionalEncoding2d, build_tokenizer, parameter_dtype


class Embedded(NamedTuple):
    """What an embedding gives the core."""
    tokens: Tensor  # [B, N, D], with their positional encoding
    positions: Any  # images: the token grid (h, w); points: token positions [B, N, 3]
    token_mask: Optional[Tensor] = None  # bool [B, N], True = a valid token; None: all valid


def pad_to_multiple(img: Tensor, multiple: int) -> Tensor:
    """Zero-pads the bottom and right of ``img`` so both sides are multiples of ``multiple``."""
    pad_h, pad_w = -img.shape[-2] % multiple, -img.shape[-1] % multiple
    return F.pad(img, (0, pad_w, 0, pad_h)) if pad_h or pad_w else img


class ImageEmbedding(nn.Module):
    """An image tokenizer (``patch_embed``: linear or conv) plus the 2D Fourier encoding of the
    token grid (``fourier_pos_encode``), computed for the grid of every input.

    Images whose sides are not multiples of ``stride`` are zero-padded at the bottom and right.
    """

    def __init__(self, patch_embed: nn.Module, embed_dims: int):
        super().__init__()
        self.patch_embed = patch_embed
        self.fourier_pos_encode = FourierPositionalEncoding2d(embed_dims)
        self.stride: Optional[int] = patch_embed.stride

    @classmethod
    def from_arch(cls, arch: ArchSetting, in_channels: int = 3) -> 'ImageEmbedding':
        """The image tokenizer of ``arch`` (a released name, a dict or a ``BiXTArch``)."""
        arch = resolve_arch(arch)[0]
        return cls(build_tokenizer(arch.tokenizer, in_channels, arch.embed_dims, arch.patch_size,
                                   arch.stride), arch.embed_dims)

    def forward(self, img: Tensor) -> Embedded:
        """Tokens in row-major grid order and the grid ``(h, w)``. The image is cast to the
        tokenizer's dtype, so a model cast with ``.half()`` or ``.to(torch.bfloat16)`` takes the
        fp32 images of mmseg's data preprocessor."""
        feats = self.patch_embed(pad_to_multiple(img, self.stride).to(parameter_dtype(self.patch_embed)))
        height, width = feats.shape[-2:]
        tokens = feats.flatten(2).transpose(1, 2) + self.fourier_pos_encode(height, width)
        # One copy here: a channels-first layout would otherwise propagate through every residual
        # add and cost a copy in each LayerNorm and Linear downstream.
        return Embedded(tokens.contiguous(), (height, width))


class PointEmbedding(nn.Module):
    """A point tokenizer (``tokenizer``) that brings its own positional encoding: it maps points
    ``[B, N, C]`` (and a ``point_mask [B, N]``, True = a real point, or None) to ``(tokens [B, T, D],
    positions [B, T, 3], token_mask [B, T] or None)``. Point tokens have no grid."""

    def __init__(self, tokenizer: nn.Module):
        super().__init__()
        self.tokenizer = tokenizer
        self.stride: Optional[int] = None

    def forward(self, points: Tensor, point_mask: Optional[Tensor] = None) -> Embedded:
        tokens, positions, token_mask = self.tokenizer(points, point_mask)
        return Embedded(tokens, positions, token_mask)
