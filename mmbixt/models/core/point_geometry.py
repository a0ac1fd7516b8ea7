"""Point-cloud geometry (pure torch): gathering, farthest point sampling, k nearest neighbours.

Shared by the point tokenizers and the part head. Every function takes an optional ``mask [B, N]``
(bool, True = a real point; padding sits at the end of each row), so a batch of clouds with
different numbers of points gives each cloud exactly what it gets alone: padding is never sampled,
never a neighbour.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .tracing import traced


def gather_points(values: Tensor, index: Tensor) -> Tensor:
    """``values [B, N, C]`` picked by ``index [B, ...]`` -> ``[B, ..., C]``."""
    batch = torch.arange(values.shape[0], device=values.device).view(-1, *[1] * (index.ndim - 1))
    return values[batch, index]


def check_enough_points(num_wanted: int, num_points: int, mask: Optional[Tensor], what: str) -> None:
    """Refuses ``num_wanted`` > the point count of the smallest cloud (in eager mode; a traced
    graph cannot raise on data)."""
    if traced():
        return
    fewest = num_points if mask is None else int(mask.sum(dim=1).min())
    if num_wanted > fewest:
        raise ValueError(f'cannot take {num_wanted} {what} from a cloud of {fewest} points; '
                         f'lower the tokenizer\'s num_groups/group_size or give more points')


def checked_point_mask(points: Tensor, mask: Optional[Tensor]) -> Optional[Tensor]:
    """``mask`` checked against ``points [B, N, C]``; None when every point is real (in eager
    mode: a traced graph keeps its mask input)."""
    if mask is None:
        return None
    if mask.dtype != torch.bool or mask.shape != points.shape[:2]:
        raise ValueError(f'point_mask of shape {tuple(mask.shape)} ({mask.dtype}) for points '
                         f'{tuple(points.shape)}: give one bool per point, {tuple(points.shape[:2])}')
    if traced():
        return mask
    if not bool(mask[:, 0].all()) or bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError('point_mask must mark each cloud\'s real points first and its padding '
                         'at the end of the row (at least one real point per cloud)')
    return None if bool(mask.all()) else mask


def farthest_point_sample(xyz: Tensor, num_samples: int, start: Optional[Tensor] = None,
                          mask: Optional[Tensor] = None) -> Tensor:
    """Indices ``[B, num_samples]`` of farthest point sampling on ``xyz [B, N, 3]``.

    Batched over shapes; the loop over samples is inherent to FPS. Starts from point 0 unless
    ``start [B]`` is given, so results are deterministic. Points outside ``mask`` are never picked:
    their distance starts below any real one, so each cloud samples as it does alone.
    """
    batch, num_points, _ = xyz.shape
    check_enough_points(num_samples, num_points, mask, 'samples')
    index = torch.zeros(batch, num_samples, dtype=torch.long, device=xyz.device)
    nearest = torch.full((batch, num_points), float('inf'), device=xyz.device, dtype=xyz.dtype)
    if mask is not None:
        nearest = nearest.masked_fill(~mask, -1.0)  # squared distances are >= 0: never the max
    current = (torch.zeros(batch, dtype=torch.long, device=xyz.device) if start is None
               else start.to(xyz.device))
    rows = torch.arange(batch, device=xyz.device)
    for i in range(num_samples):  # one step samples every shape of the batch
        index[:, i] = current
        dist = (xyz - xyz[rows, current].unsqueeze(1)).square().sum(-1)
        nearest = torch.minimum(nearest, dist)  # out-of-place: the ONNX export traces this loop
        current = nearest.argmax(-1)
    return index


def knn(query: Tensor, ref: Tensor, k: int, ref_mask: Optional[Tensor] = None
        ) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest ``ref [B, N, 3]`` points of each ``query [B, M, 3]`` point: squared
    distances and indices ``[B, M, k]``, nearest first. Points outside ``ref_mask [B, N]`` are
    never neighbours."""
    check_enough_points(k, ref.shape[1], ref_mask, 'neighbours')
    dist = torch.cdist(query, ref).square()
    if ref_mask is not None:
        dist = dist.masked_fill(~ref_mask.unsqueeze(1), float('inf'))
    dist, index = dist.topk(k, dim=-1, largest=False, sorted=True)
    return dist, index
