"""``BiXTEncoder``: tokenizer + positional encoding + ``BiXTCore``, the part every BiXT model shares.

The image backbone, the point backbone and the timm classifier are each a ``BiXTEncoder`` with their
own outputs on top. Data flow::

    image  [B, C, H, W] -> pad to the stride -> patch_embed + fourier_pos_encode -> tokens [B, N, D]
    points [B, N, C]    -> tokenizer (brings its own positional encoding)       -> tokens [B, N, D]
    tokens + latents [1, L, D] -> core.blocks.0 .. core.blocks.k -> (latents, tokens) after each

The encoder's parameters sit at the top level of the model that extends it (``patch_embed.``,
``fourier_pos_encode.`` or ``tokenizer.``, then ``core.``), so one remap of the released layout
(``mmbixt.checkpoint.to_core_layout``) and one loading policy serve every model.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch.nn.functional as F
from torch import Tensor, nn

from ...archs import BiXTArch, resolve_arch
from .layers import STREAM_CHUNK_TOKENS, TRAIN_CHUNK_TOKENS, BiXTCore
from .tracing import concrete
from .tokenizers import FourierPositionalEncoding2d, build_tokenizer, embed_image

IMAGE_TOKENIZER = 'image'


def pad_to_multiple(img: Tensor, multiple: int) -> Tensor:
    """Zero-pads the bottom and right of ``img`` so both sides are multiples of ``multiple``.

    Eager skips the pad when there is none; a traced graph (symbolic sizes) always pads, by zero
    rows where the size is a multiple already, so it serves every size."""
    pad_h, pad_w = -img.shape[-2] % multiple, -img.shape[-1] % multiple
    if concrete(pad_h, pad_w) and not (pad_h or pad_w):
        return img
    return F.pad(img, (0, pad_w, 0, pad_h))


def resolve_out_indices(out_indices: Union[int, Sequence[int]], num_layers: int) -> tuple[int, ...]:
    """Layer indices as given (order kept), negative ones counted from the end; refuses an empty
    setting and indices outside ``num_layers``."""
    indices = (out_indices,) if isinstance(out_indices, int) else tuple(out_indices)
    if not indices:
        raise ValueError('out_indices must name at least one layer')
    for index in indices:
        if not -num_layers <= index < num_layers:
            raise ValueError(f'out_indices {indices} out of range for {num_layers} layers')
    return tuple(index % num_layers for index in indices)


class BiXTEncoder(nn.Module):
    """Tokenizer, positional encoding and the BiXT core (latents + layers), built from a ``BiXTArch``.

    Models extend it and add their outputs: ``BiXTBackbone`` (token maps), ``PointBiXTBackbone``
    (token sets) and the timm ``BiXTClassifier`` (pooled latents). ``embed(x)`` gives the tokens and
    where they sit, ``encode(x, indices)`` the ``(latents, tokens)`` after each layer asked for.

    Args:
        arch: a released name, a dict of ``mmbixt.archs.ARCH_DICT_KEYS`` or a ``BiXTArch``: widths,
            heads, latents, bi-directional layers, LayerScale and the image tokenizer.
        tokenizer: ``'image'`` builds the arch's image tokenizer (linear or conv, ``patch_size``,
            ``stride``) as ``patch_embed`` and the 2D Fourier encoding as ``fourier_pos_encode``;
            any other input takes a module (kept as ``tokenizer``) mapping it to ``(tokens [B, N, D],
            positions)`` with its own positional encoding, e.g. the point tokenizers.
        in_channels: image channels (image tokenizer only).
        drop_path_rate: stochastic depth of the cross-attention blocks (and of the latent
            self-attention unless ``self_drop_path_rate`` is given), rising linearly over the layers.
        self_drop_path_rate: stochastic depth of the latent self-attention blocks.
        with_cp: gradient checkpointing of each layer.
        train_chunk_size: a forward *with* gradients over more tokens than this runs the token side
            in chunks, recomputed in backward (memory-lean training). None: never.
        stream_chunk_size: a forward *without* gradients over more tokens than this streams the
            token side in chunks (cache locality). None: never. Both give the same result as no
            chunking; their defaults live in ``mmbixt.models.core.layers``.
        one_sided_last: append the latent-only last layer of the classifiers.
        **kwargs: passed to the next base class (``init_cfg`` of mmengine's ``BaseModule``).
    """

    def __init__(self, arch: Union[str, dict, BiXTArch], tokenizer: Union[str, nn.Module] = IMAGE_TOKENIZER,
                 in_channels: int = 3, drop_path_rate: float = 0.0,
                 self_drop_path_rate: Optional[float] = None, with_cp: bool = False,
                 train_chunk_size: Optional[int] = TRAIN_CHUNK_TOKENS,
                 stream_chunk_size: Optional[int] = STREAM_CHUNK_TOKENS,
                 one_sided_last: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.arch, self.arch_name = resolve_arch(arch)
        self.embed_dims = self.arch.embed_dims
        self.num_layers = self.arch.num_layers
        self.has_image_tokenizer = not isinstance(tokenizer, nn.Module)
        if isinstance(tokenizer, nn.Module):
            self.tokenizer = tokenizer
        elif tokenizer == IMAGE_TOKENIZER:
            self.stride = self.arch.stride
            self.patch_embed = build_tokenizer(self.arch.tokenizer, in_channels, self.embed_dims,
                                               self.arch.patch_size, self.arch.stride)
            self.fourier_pos_encode = FourierPositionalEncoding2d(self.embed_dims)
        else:
            raise ValueError(f"tokenizer must be 'image' or a module, got {tokenizer!r}")
        self.core = BiXTCore.from_arch(
            self.arch, one_sided_last=one_sided_last, cross_drop_path_rate=drop_path_rate,
            self_drop_path_rate=drop_path_rate if self_drop_path_rate is None else self_drop_path_rate,
            with_cp=with_cp, train_chunk_size=train_chunk_size, stream_chunk_size=stream_chunk_size)

    @property
    def arch_description(self) -> str:
        """How messages name this model: its released name, else what it was built as."""
        if self.arch_name:
            return self.arch_name
        if self.has_image_tokenizer:
            return (f'a {self.arch.tokenizer} stride-{self.stride} BiXT with {self.num_layers} '
                    'layers')
        return f'a {self.num_layers}-layer {type(self).__name__}'

    def embed(self, inputs: Tensor) -> tuple[Tensor, Any]:
        """Tokens ``[B, N, D]`` with their positional encoding, and where they sit: the grid
        ``(h, w)`` of an image (zero-padded at the bottom and right to a multiple of the stride),
        or what the tokenizer module returns (the token positions ``[B, N, 3]`` of points)."""
        if self.has_image_tokenizer:
            return embed_image(self.patch_embed, self.fourier_pos_encode,
                               pad_to_multiple(inputs, self.stride))
        tokens, positions = self.tokenizer(inputs)
        return tokens, positions

    def encode(self, inputs: Tensor, indices: Sequence[int]
               ) -> tuple[dict[int, tuple[Tensor, Optional[Tensor]]], Any]:
        """``(latents, tokens)`` after each layer in ``indices`` (stops after the last of them),
        and where the tokens sit (see ``embed``)."""
        tokens, positions = self.embed(inputs)
        return self.core.forward_until(tokens, indices), positions
