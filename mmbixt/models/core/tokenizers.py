"""Image tokenisers and the 2D Fourier positional encoding of BiXT.

Attribute names (``proj``, ``token_projection``) follow the released checkpoints.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .tracing import traced

CONV_TOKENIZER_STAGES = {16: 4, 8: 3, 4: 2}


def grid_mask(sizes: Tensor, height: int, width: int) -> Tensor:
    """bool ``[B, height, width]``: True inside each sample's top-left ``(h, w)`` of ``sizes [B, 2]``."""
    rows = torch.arange(height, device=sizes.device) < sizes[:, :1]
    cols = torch.arange(width, device=sizes.device) < sizes[:, 1:]
    return rows[:, :, None] & cols[:, None, :]


class LinearTokenizer(nn.Module):
    """One strided convolution of kernel ``patch_size``: stride 16, 8 or 4 with 'same'-style padding.

    For an input whose sides are multiples of ``stride`` the grid is exactly ``H/stride x W/stride``.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int = 16, stride: int = 16):
        super().__init__()
        if (patch_size - stride) % 2:
            raise ValueError(f'patch_size - stride must be even, got {patch_size} and {stride}')
        self.patch_size = patch_size
        self.stride = stride
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, stride,
                              padding=(patch_size - stride) // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def conv3x3_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 2, 1, bias=False),
                         nn.BatchNorm2d(out_channels))


class ConvTokenizer(nn.Module):
    """A stack of stride-2 3x3 conv + BatchNorm stages with GELU between them (XCiT style).

    ``patch_size`` 16, 8 or 4 gives 4, 3 or 2 stages, widths doubling up to ``embed_dims``.

    In a padded batch no stage needs masking: a sample's stride-padded extent is even at every
    stage, and output ``r`` of a 3x3 stride-2 convolution reads inputs ``2r-1 .. 2r+1``, so the
    sample's outputs never read an activation beyond its extent at the bottom or right; only its
    input pixels must be zero there (``ImageEmbedding`` zeroes them).
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int = 16):
        super().__init__()
        if patch_size not in CONV_TOKENIZER_STAGES:
            raise ValueError(f'conv tokenizer patch_size must be one of 16, 8, 4; got {patch_size}')
        self.patch_size = self.stride = patch_size
        stages = CONV_TOKENIZER_STAGES[patch_size]
        widths = [in_channels] + [embed_dims // 2 ** (stages - 1 - i) for i in range(stages)]
        layers: list[nn.Module] = []
        for i in range(stages):
            if i:
                layers.append(nn.GELU())
            layers.append(conv3x3_bn(widths[i], widths[i + 1]))
        self.proj = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def build_tokenizer(kind: str, in_channels: int, embed_dims: int, patch_size: int,
                    stride: int) -> nn.Module:
    if kind == 'linear':
        return LinearTokenizer(in_channels, embed_dims, patch_size, stride)
    if kind == 'conv':
        if stride != patch_size:
            raise ValueError(f'the conv tokenizer has stride == patch_size, got {patch_size}/{stride}')
        return ConvTokenizer(in_channels, embed_dims, patch_size)
    raise ValueError(f"tokenizer must be 'linear' or 'conv', got {kind!r}")


def parameter_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s first floating parameter (fp32 for a module without one)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def sin_cos(positions: Tensor, dim_t: Tensor) -> Tensor:
    """``[n]`` positions -> ``[n, len(dim_t)]`` features, sin and cos interleaved."""
    angles = positions[:, None] / dim_t
    return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)


def fourier_features_2d(height: int, width: int, hidden_dims: int = 32,
                        temperature: float = 10000.0,
                        device: Optional[torch.device] = None) -> Tensor:
    """The un-projected DETR/XCiT encoding of an ``height x width`` grid: ``[2*hidden_dims, h, w]``.

    Rows and columns are numbered from 1 and scaled to (0, 2*pi]; each axis gets ``hidden_dims``
    interleaved sin/cos channels; the y channels come first.
    """
    eps = 1e-6
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps) * (2 * math.pi)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps) * (2 * math.pi)
    dim_t = torch.arange(hidden_dims, dtype=torch.float32, device=device)
    dim_t = torch.pow(temperature, 2 * torch.div(dim_t, 2, rounding_mode='floor') / hidden_dims)
    pos_y = sin_cos(y, dim_t)[:, None, :].expand(height, width, hidden_dims)
    pos_x = sin_cos(x, dim_t)[None, :, :].expand(height, width, hidden_dims)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)


class FourierPositionalEncoding2d(nn.Module):
    """Fourier features of the token grid projected to ``embed_dims`` by a 1x1 convolution.

    Computed for the actual grid of every input, so any image size works; the fixed ``pos`` buffer of
    224px checkpoints is therefore not needed.
    """

    def __init__(self, embed_dims: int, hidden_dims: int = 32, temperature: float = 10000.0):
        super().__init__()
        self.hidden_dims = hidden_dims
        self.temperature = temperature
        self.token_projection = nn.Conv2d(hidden_dims * 2, embed_dims, kernel_size=1)
        self._cache: dict[tuple, Tensor] = {}

    def features(self, height: int, width: int, device: torch.device) -> Tensor:
        if traced(height, width):  # a captured graph computes them (symbolic sizes cannot key it)
            return fourier_features_2d(height, width, self.hidden_dims, self.temperature, device)
        key = (height, width, str(device))
        if key not in self._cache:
            self._cache = {key: fourier_features_2d(height, width, self.hidden_dims,
                                                    self.temperature, device)}
        return self._cache[key]

    def forward(self, height: int, width: int) -> Tensor:
        """The encoding as ``[1, h*w, D]`` in row-major token order, in the dtype of the projection
        (the sin/cos features are computed in fp32, then cast: a bf16 or fp16 model gets them in
        its own dtype)."""
        weight = self.token_projection.weight
        if torch.jit.is_scripting():  # no cache (a dict on sizes) in TorchScript
            features = fourier_features_2d(height, width, self.hidden_dims, self.temperature,
                                           weight.device)
        else:
            features = self.features(height, width, weight.device)
        encoding = self.token_projection(features.to(weight.dtype))
        return encoding.flatten(1).transpose(0, 1).unsqueeze(0)

    def tokens_of(self, feats: Tensor, encoding: Optional[Tensor] = None) -> Tensor:
        """A tokenizer's map ``[B, D, h, w]`` as tokens ``[B, h*w, D]`` (row-major) with the
        encoding of its grid added (``encoding``: another one, e.g. ``per_sample``'s)."""
        if encoding is None:
            encoding = self.forward(feats.shape[-2], feats.shape[-1])
        tokens = feats.flatten(2).transpose(1, 2) + encoding
        # One copy here: a channels-first layout would otherwise propagate through every residual
        # add and cost a copy in each LayerNorm and Linear downstream.
        return tokens.contiguous()

    def per_sample(self, grids: list[tuple[int, int]], height: int, width: int) -> Tensor:
        """``[B, height*width, D]``: each sample's encoding computed for its own grid (the
        encoding is normalised by the grid size), at the top left of the batch grid; zeros
        elsewhere."""
        encodings = {grid: self(*grid).view(*grid, -1) for grid in dict.fromkeys(grids)}
        # In the encodings' dtype: under autocast the projection gives bf16.
        first = next(iter(encodings.values()))
        out = first.new_zeros(len(grids), height, width, first.shape[-1])
        for grid, encoding in encodings.items():
            samples = [i for i, own in enumerate(grids) if own == grid]
            out[samples, :grid[0], :grid[1]] = encoding
        return out.flatten(1, 2)
