"""``PointDataPreprocessor``: batches point clouds, of equal or different sizes, for the point
segmentor."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from mmengine.model import BaseDataPreprocessor
from mmseg.registry import MODELS
from torch import Tensor


def pad_point_clouds(clouds: Sequence[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
    """Clouds ``[N_i, C]`` -> ``points [B, max N_i, C]`` zero-padded at the end of each row, and
    ``point_mask [B, max N_i]`` (True = a real point); the mask is None when nothing is padded."""
    channels = {cloud.shape[-1] for cloud in clouds}
    if len(channels) > 1 or any(cloud.ndim != 2 for cloud in clouds):
        raise ValueError('point clouds in one batch must all be [N, C] with the same C, got '
                         f'{sorted({tuple(c.shape) for c in clouds})}; check the pipeline')
    counts = [len(cloud) for cloud in clouds]
    if min(counts) == max(counts):
        return torch.stack(list(clouds)), None
    points = clouds[0].new_zeros(len(clouds), max(counts), clouds[0].shape[-1])
    mask = torch.zeros(points.shape[:2], dtype=torch.bool, device=points.device)
    for row, row_mask, cloud in zip(points, mask, clouds):
        row[:len(cloud)] = cloud
        row_mask[:len(cloud)] = True
    return points, mask


@MODELS.register_module()
class PointDataPreprocessor(BaseDataPreprocessor):
    """Batches the per-shape ``inputs`` ``[N_i, C]`` into ``[B, max N_i, C]`` on the model's
    device. Clouds of different sizes are zero-padded at the end and ``point_mask [B, max N_i]``
    (True = a real point) goes to the model, which then gives each cloud what it gets alone; it is
    None when every cloud has the same size. The data samples stay a list (their ``gt_parts`` are
    moved along)."""

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs, point_mask = data['inputs'], None
        if isinstance(inputs, (list, tuple)):
            inputs, point_mask = pad_point_clouds(inputs)
        return dict(inputs=inputs, data_samples=data.get('data_samples'), point_mask=point_mask)
