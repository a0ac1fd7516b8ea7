"""``PointDataPreprocessor``: batches point clouds of equal size for the point segmentor."""
from __future__ import annotations

import torch
from mmengine.model import BaseDataPreprocessor
from mmseg.registry import MODELS


@MODELS.register_module()
class PointDataPreprocessor(BaseDataPreprocessor):
    """Stacks the per-shape ``inputs`` ``[N, C]`` into ``[B, N, C]`` on the model's device; the data
    samples stay a list (their ``gt_parts`` are moved along)."""

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs = data['inputs']
        if isinstance(inputs, (list, tuple)):
            sizes = {tuple(points.shape) for points in inputs}
            if len(sizes) > 1:
                raise ValueError(f'point clouds of different sizes in one batch: {sorted(sizes)}; '
                                 'add SamplePoints to the pipeline')
            inputs = torch.stack(list(inputs))
        return dict(inputs=inputs, data_samples=data.get('data_samples'))
