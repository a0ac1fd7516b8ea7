"""The embeddings of a ``BiXTEncoder``: each maps its input to tokens, where they sit, and which are
valid, and declares its token ``stride`` (None where the tokens have no grid)."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...archs import ArchSetting, resolve_arch
from .point_geometry import checked_point_mask
from .tokenizers import (FourierPositionalEncoding2d, build_tokenizer, grid_mask,
                         parameter_dtype)
from .tracing import traced


class Embedded(NamedTuple):
    """What an embedding gives the core."""
    tokens: Tensor  # [B, N, D], with their positional encoding
    positions: Any  # images: the token grid (h, w); points: token positions [B, N, 3]
    token_mask: Optional[Tensor] = None  # bool [B, N], True = a valid token; None: all valid


def pad_to_multiple(img: Tensor, multiple: int) -> Tensor:
    """Zero-pads the bottom and right of ``img`` so both sides are multiples of ``multiple``.

    Eager skips the pad when there is none; a traced graph (symbolic sizes) always pads, by zero
    rows where the size is a multiple already, so it serves every size."""
    pad_h, pad_w = -img.shape[-2] % multiple, -img.shape[-1] % multiple
    if not torch.jit.is_scripting():  # (TorchScript always pads)
        if not traced(pad_h, pad_w) and not (pad_h or pad_w):
            return img
    return F.pad(img, [0, pad_w, 0, pad_h])


ValidShapes = Optional[Sequence[Sequence[int]]]


def real_pixel_sizes(img: Tensor, valid_shapes: ValidShapes) -> Optional[Tensor]:
    """``valid_shapes`` checked against the batch ``img`` as a ``[B, 2]`` tensor of ``(h, w)``;
    None when nothing is padded (no ``valid_shapes``, or every sample fills the image)."""
    if valid_shapes is None:
        return None
    batch, height, width = img.shape[0], img.shape[-2], img.shape[-1]
    shapes = [tuple(int(side) for side in shape[:2]) for shape in valid_shapes]
    if len(shapes) != batch:
        raise ValueError(f'valid_shapes has {len(shapes)} entries for a batch of {batch}: give '
                         "one (h, w) of real pixels per sample (mmseg's img_shape)")
    for index, (h, w) in enumerate(shapes):
        if not (0 < h <= height and 0 < w <= width):
            raise ValueError(f'valid_shapes[{index}]=({h}, {w}) does not fit the padded batch '
                             f'image {height}x{width}: give each sample\'s (h, w) of real pixels, '
                             'top-left aligned')
    if all(shape == (height, width) for shape in shapes):
        return None
    return torch.tensor(shapes, device=img.device)


class ImageEmbedding(nn.Module):
    """An image tokenizer (``patch_embed``: linear or conv) plus the 2D Fourier encoding of the
    token grid (``fourier_pos_encode``), computed for the grid of every input.

    Images whose sides are not multiples of ``stride`` are zero-padded at the bottom and right.
    A padded batch (``valid_shapes``: each sample's ``(h, w)`` of real pixels, top-left aligned)
    gives each sample's tokens what the sample alone gives: pixels outside ``(h, w)`` are zeroed
    (the linear tokenizer's kernel reaches past the stride-padded extent; the conv one does not,
    see ``ConvTokenizer``), each sample gets the encoding of its own ``ceil(h/s) x ceil(w/s)``
    grid, and a ``token_mask`` marks those tokens valid. Without padding the mask is None and the
    path is the unpadded one.
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

    def forward(self, img: Tensor, valid_shapes: ValidShapes = None) -> Embedded:
        return self.embed_with(self, img, valid_shapes)

    @staticmethod
    def embed_with(owner: nn.Module, img: Tensor, valid_shapes: ValidShapes = None) -> Embedded:
        """Tokens in row-major grid order, the grid ``(h, w)`` and the token mask (None: all
        valid), by the modules ``owner`` holds (``patch_embed``, ``fourier_pos_encode``, and its
        ``stride``): this embedding, or the ``BiXTEncoder`` that took them as its own. The image
        is cast to the tokenizer's dtype, so a model cast with ``.half()`` or
        ``.to(torch.bfloat16)`` takes the fp32 images of mmseg's data preprocessor."""
        sizes = real_pixel_sizes(img, valid_shapes)
        img = pad_to_multiple(img, owner.stride).to(parameter_dtype(owner.patch_embed))
        if sizes is None:
            return grid_tokens(owner, img)
        img = img * grid_mask(sizes, *img.shape[-2:])[:, None]
        grids = torch.div(sizes + owner.stride - 1, owner.stride, rounding_mode='floor')
        if (grids * owner.stride == torch.tensor(img.shape[-2:], device=img.device)).all():
            return grid_tokens(owner, img)  # padding only inside the last row or column of tokens
        return grid_tokens(owner, img, grids)


def grid_tokens(owner: nn.Module, img: Tensor, grids: Optional[Tensor] = None) -> Embedded:
    """The tokens of ``img`` (sides multiples of the stride) by ``owner``'s ``patch_embed`` and
    ``fourier_pos_encode``; ``grids [B, 2]``: each sample's own token grid inside the batch grid
    (None: every sample fills it)."""
    feats = owner.patch_embed(img)
    height, width = feats.shape[-2:]
    if grids is None:
        return Embedded(owner.fourier_pos_encode.tokens_of(feats), (height, width))
    token_mask = grid_mask(grids, height, width).flatten(1)
    pos = owner.fourier_pos_encode.per_sample([tuple(g) for g in grids.tolist()], height, width)
    return Embedded(owner.fourier_pos_encode.tokens_of(feats, pos), (height, width), token_mask)


class PointEmbedding(nn.Module):
    """A point tokenizer (``tokenizer``) that brings its own positional encoding: it maps points
    ``[B, N, C]`` (and, for a padded batch, ``point_mask [B, N]``, True = a real point) to
    ``PointTokens`` (tokens, positions, token mask). Point tokens have no grid."""

    def __init__(self, tokenizer: nn.Module):
        super().__init__()
        self.tokenizer = tokenizer
        self.stride: Optional[int] = None

    def forward(self, points: Tensor, point_mask: Optional[Tensor] = None) -> Embedded:
        return self.embed_with(self, points, point_mask)

    @staticmethod
    def embed_with(owner: nn.Module, points: Tensor, point_mask: Optional[Tensor] = None
                   ) -> Embedded:
        """The tokens of ``points`` by ``owner``'s ``tokenizer`` (this embedding, or the
        ``BiXTEncoder`` that took it as its own)."""
        tokens, positions, token_mask = owner.tokenizer(points,
                                                        checked_point_mask(points, point_mask))
        return Embedded(tokens, positions, token_mask)
