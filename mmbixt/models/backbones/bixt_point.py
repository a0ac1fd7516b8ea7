"""``PointBiXTBackbone``: the BiXT core on point clouds (per-point or grouped tokens).

The tokens come from a point tokenizer instead of a patch embedding; everything after it is the same
``BiXTEncoder`` core (built from the same ``arch``) as the image backbone, so the core of an image
checkpoint can initialise it.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Union

import torch
from mmseg.registry import MODELS
from torch import Tensor, nn

from ...archs import resolve_arch
from ...checkpoint import IMAGE_TOKENIZER_PREFIXES
from ...sizes import check_positive_size
from ..core import PointEmbedding
from ..core.layers import STREAM_CHUNK_TOKENS, TRAIN_CHUNK_TOKENS
from ..core.point_features import PointBackboneOutput, point_mlp
from ..core.point_geometry import farthest_point_sample, gather_points, knn
from .base import BiXTPretrainedBackbone


# ---------------------------------------------------------------- positional encoding
class FourierPointEncoding(nn.Module):
    """sin/cos of ``xyz * pi * 2^k`` (k < num_freqs) per axis, plus xyz itself, projected to D."""

    def __init__(self, embed_dims: int, num_freqs: int = 8):
        super().__init__()
        self.num_freqs = num_freqs
        self.proj = nn.Linear(3 * (2 * num_freqs + 1), embed_dims)

    def forward(self, xyz: Tensor) -> Tensor:
        # In fp32 whatever the model's dtype: bf16 angles of up to pi*2^7*|xyz| lose their phase.
        xyz = xyz.float()
        freqs = math.pi * 2.0 ** torch.arange(self.num_freqs, device=xyz.device, dtype=xyz.dtype)
        angles = (xyz.unsqueeze(-1) * freqs).flatten(-2)
        feats = torch.cat([xyz, angles.sin(), angles.cos()], dim=-1)
        return self.proj(feats.to(self.proj.weight.dtype))


# ---------------------------------------------------------------- tokenizers
class PointTokens(NamedTuple):
    tokens: Tensor  # [B, T, D]
    xyz: Tensor  # [B, T, 3]: where each token sits (a point, or the centre of a group)
    token_mask: Optional[Tensor] = None  # bool [B, T], True = a valid token; None: all valid


class PerPointTokenizer(nn.Module):
    """Every point is a token: an MLP of its features (xyz, normals) plus the encoding of xyz."""

    def __init__(self, in_channels: int, embed_dims: int, hidden_dims: int = 128,
                 num_freqs: int = 8):
        super().__init__()
        self.embed = point_mlp((in_channels, hidden_dims, embed_dims))
        self.pos_encode = FourierPointEncoding(embed_dims, num_freqs)

    def forward(self, points: Tensor, point_mask: Optional[Tensor] = None) -> PointTokens:
        """Tokens of ``points [B, N, C]``; the tokens of padding (outside ``point_mask``) are
        invalid."""
        xyz = points[..., :3]
        feats = self.embed(points.to(self.embed[0].weight.dtype))
        return PointTokens(feats + self.pos_encode(xyz), xyz, point_mask)


class GroupedPointTokenizer(nn.Module):
    """Farthest point sampling of ``num_groups`` centres, their ``group_size`` nearest points, and a
    small PointNet over each neighbourhood (local coordinates, plus normals when given): two shared
    MLPs with a max-pool after each, the first pool fed back to every point (Point-BERT style)."""

    def __init__(self, in_channels: int, embed_dims: int, num_groups: int = 128,
                 group_size: int = 32, hidden_dims: int = 128, num_freqs: int = 8):
        super().__init__()
        check_positive_size(num_groups, 'model.backbone.tokenizer.num_groups', 'groups')
        check_positive_size(group_size, 'model.backbone.tokenizer.group_size', 'points')
        self.num_groups = num_groups
        self.group_size = group_size
        self.first = point_mlp((in_channels, hidden_dims, hidden_dims))
        self.second = point_mlp((2 * hidden_dims, 2 * hidden_dims, embed_dims))
        self.pos_encode = FourierPointEncoding(embed_dims, num_freqs)

    def group(self, points: Tensor, mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Centres ``[B, G, 3]`` and neighbourhoods ``[B, G, K, C]`` in coordinates local to the
        centre, both drawn from the real points (``mask``) only."""
        self.check_enough_points(points.shape[-2])
        xyz = points[..., :3].float()  # the geometry in fp32 whatever the model's dtype
        centres = gather_points(xyz, farthest_point_sample(xyz, self.num_groups, mask=mask))
        _, index = knn(centres, xyz, self.group_size, ref_mask=mask)
        groups = gather_points(points.float(), index)
        local_xyz = groups[..., :3] - centres.unsqueeze(2)
        dtype = self.first[0].weight.dtype
        return centres, torch.cat([local_xyz, groups[..., 3:]], dim=-1).to(dtype)

    def check_enough_points(self, num_points: int) -> None:
        for setting, value in (('num_groups', self.num_groups), ('group_size', self.group_size)):
            if value > num_points:
                raise ValueError(
                    f'model.backbone.tokenizer.{setting}={value} is larger than the {num_points} '
                    f'points of each cloud: lower it, or sample more points (the dataset\'s '
                    'num_points / SamplePoints)')

    def forward(self, points: Tensor, point_mask: Optional[Tensor] = None) -> PointTokens:
        """Tokens of ``points [B, N, C]``: every group is made of real points (``point_mask``), so
        every token is valid."""
        centres, groups = self.group(points, point_mask)
        feats = self.first(groups)
        pooled = feats.max(dim=2, keepdim=True).values.expand_as(feats)
        tokens = self.second(torch.cat([feats, pooled], dim=-1)).max(dim=2).values
        return PointTokens(tokens + self.pos_encode(centres), centres)


POINT_TOKENIZERS = {'per_point': PerPointTokenizer, 'grouped': GroupedPointTokenizer}


def build_point_tokenizer(cfg: dict, in_channels: int, embed_dims: int) -> nn.Module:
    cfg = dict(cfg)
    kind = cfg.pop('type', 'grouped')
    if kind not in POINT_TOKENIZERS:
        raise ValueError(f'unknown point tokenizer {kind!r}; choose one of {sorted(POINT_TOKENIZERS)}')
    return POINT_TOKENIZERS[kind](in_channels, embed_dims, **cfg)


# ---------------------------------------------------------------- backbone
@MODELS.register_module()
class PointBiXTBackbone(BiXTPretrainedBackbone):
    """BiXT on point clouds: a point tokenizer feeding the same ``BiXTEncoder`` as the images.

    Input ``[B, N, C]`` points (xyz first, then optional normals). Returns a ``PointBackboneOutput``:
    the refined tokens of the layers in ``out_indices``, where the tokens sit, and (with
    ``with_latents``) the latents.

    Args:
        arch: as for ``BiXTBackbone``: a released name or a dict of ``embed_dims, num_heads,
            num_latents, num_layers, layer_scale`` (Ti: 192, 6, 64, 12); its image tokenizer
            settings are unused.
        in_channels: 3 (xyz) or 6 (xyz + normals).
        tokenizer: ``dict(type='per_point', hidden_dims=128)`` (every point a token) or
            ``dict(type='grouped', num_groups=128, group_size=32)`` (FPS + kNN + PointNet).
        out_indices: layers whose tokens are returned (negative counts from the end), in the
            order given.
        out_norm: a LayerNorm on each returned token set.
        with_latents: also return the latents after the last returned layer (then trained).
        drop_path_rate / self_drop_path_rate / with_cp / train_chunk_size / stream_chunk_size:
            as for ``BiXTBackbone``.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH, strict=True)`` initialises latents
            and layers from an image BiXT checkpoint (a d13 zip as downloaded, for 12 layers); the
            image tokenizer and positional encoding are dropped, the point tokenizer and output
            norms stay new. Width, latents, heads, LayerScale and depth must match the file.
    """
    # Cross-modal initialisation: the core of an image checkpoint; its tokenizer goes unused.
    dropped_prefixes = (BiXTPretrainedBackbone.dropped_prefixes + IMAGE_TOKENIZER_PREFIXES)
    new_prefixes = ('tokenizer.', 'out_norms.')

    def __init__(self, arch: Union[str, dict] = 'bixt_ti_l64_d13_p16', in_channels: int = 6,
                 tokenizer: Optional[dict] = None, out_indices: Sequence[int] = (3, 7, 11),
                 out_norm: bool = True, with_latents: bool = False, drop_path_rate: float = 0.0,
                 self_drop_path_rate: Optional[float] = None, with_cp: bool = False,
                 train_chunk_size: Optional[int] = TRAIN_CHUNK_TOKENS,
                 stream_chunk_size: Optional[int] = STREAM_CHUNK_TOKENS,
                 init_cfg: Optional[dict] = None):
        embed_dims = resolve_arch(arch)[0].embed_dims
        embedding = PointEmbedding(build_point_tokenizer(tokenizer or dict(type='grouped'),
                                                         in_channels, embed_dims))
        super().__init__(arch, embedding, out_indices, out_norm, with_latents, init_cfg,
                         drop_path_rate=drop_path_rate, self_drop_path_rate=self_drop_path_rate,
                         with_cp=with_cp, train_chunk_size=train_chunk_size,
                         stream_chunk_size=stream_chunk_size)
        self.in_channels = in_channels

    def forward(self, points: Tensor, point_mask: Optional[Tensor] = None) -> PointBackboneOutput:
        """``points [B, N, C]``; ``point_mask [B, N]`` (bool, True = a real point, padding at the
        end of each row) for a batch of clouds of different sizes: each cloud then gets what it
        gets alone (tokens of padding are invalid: the latents ignore them, their features are
        zeros)."""
        if points.shape[-1] != self.in_channels:
            raise ValueError(f'expected points with {self.in_channels} channels, got '
                             f'{tuple(points.shape)}; set in_channels (3: xyz, 6: xyz + normals)')
        embedded = self.embed(points, point_mask)
        latents, feats = self.intermediates_of(embedded, self.out_indices, norm=True,
                                               stop_early=True, output_fmt='NLC')
        return PointBackboneOutput(tuple(feats), embedded.positions,
                                   latents if self.with_latents else None, embedded.token_mask)
