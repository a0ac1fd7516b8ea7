"""Point tokenizers: the tokens of a point cloud (every point, or groups of neighbours), each with
the Fourier encoding of where it sits; the point counterpart of :mod:`.tokenizers`."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from ...sizes import check_positive_size
from .point_features import point_mlp
from .point_geometry import farthest_point_sample, gather_points, knn


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
