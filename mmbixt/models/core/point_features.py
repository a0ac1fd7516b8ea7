"""What the point backbone hands the part head: its output type and the shared per-point MLP.

Kept out of the backbone's file so the head depends on this contract, not on the backbone.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

from torch import Tensor, nn


class PointBackboneOutput(NamedTuple):
    feats: tuple[Tensor, ...]  # the tokens [B, T, D] of each layer in out_indices, in that order
    xyz: Tensor  # [B, T, 3] token positions
    latents: Optional[Tensor] = None  # [B, L, D] after the last returned layer, if with_latents
    mask: Optional[Tensor] = None  # [B, T] bool, True = a token of real points; None = all real


def point_mlp(channels: Sequence[int]) -> nn.Sequential:
    """Shared per-point MLP: Linear -> LayerNorm -> GELU between the given widths, plain Linear last."""
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        layers.append(nn.Linear(c_in, c_out))
        if i < len(channels) - 2:
            layers += [nn.LayerNorm(c_out), nn.GELU()]
    return nn.Sequential(*layers)
