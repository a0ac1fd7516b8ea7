"""``PointPartSegmentor``: backbone + part head on point clouds, as an mmengine model."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement
from mmseg.registry import MODELS
from torch import Tensor, nn

from ..derive import derive_setting
from ..heads.partseg_head import IGNORE_INDEX
from ..quiet_init import QuietInitWeights


def derive_part_head_settings(head: dict, backbone: nn.Module) -> dict:
    """A ``PartSegHead`` config with its widths taken from the built point backbone: token width,
    number of token sets and point channels (a given value that disagrees is refused)."""
    head = dict(head)
    source = 'the backbone (model.backbone)'
    derive_setting(head, 'in_channels', backbone.embed_dims, 'model.decode_head.in_channels',
                   f'{source} embed_dims')
    derive_setting(head, 'num_inputs', len(backbone.out_indices), 'model.decode_head.num_inputs',
                   f'the number of {source} out_indices')
    derive_setting(head, 'point_channels', backbone.in_channels,
                   'model.decode_head.point_channels', f'{source} in_channels')
    return head


def real_point_counts(point_mask: Optional[Tensor], shape: torch.Size) -> list[int]:
    """How many real points each cloud of a ``[B, N]`` batch has."""
    if point_mask is None:
        return [shape[1]] * shape[0]
    return point_mask.sum(dim=1).tolist()


def padded_labels(data_samples: Sequence[BaseDataElement], num_points: int,
                  device: torch.device) -> Tensor:
    """The samples' ``gt_parts`` as ``[B, num_points]``, padding labelled ``IGNORE_INDEX``."""
    labels = torch.full((len(data_samples), num_points), IGNORE_INDEX, dtype=torch.long,
                        device=device)
    for row, sample in zip(labels, data_samples):
        row[:len(sample.gt_parts)] = sample.gt_parts
    return labels


@MODELS.register_module()
class PointPartSegmentor(QuietInitWeights, BaseModel):
    """Part segmentation of point clouds.

    ``mode='loss'`` returns the losses; ``'predict'`` returns the data samples with ``pred_parts
    [N]`` (restricted to each shape's category) and ``seg_logits [N, parts]``; ``'tensor'`` the
    logits ``[B, N, parts]``. The object category comes from each sample's metainfo ``category``.

    Clouds of different sizes batch exactly: with ``point_mask [B, N]`` (from
    ``PointDataPreprocessor``; True = a real point, padding at the end of each row) each shape gets
    the logits it gets alone, the loss averages over real points only and each shape's predictions
    cover its own ``N_i`` points.

    Args:
        backbone: e.g. ``dict(type='PointBiXTBackbone', ...)``.
        decode_head: e.g. ``dict(type='PartSegHead', ...)``; its ``in_channels``, ``num_inputs``
            and ``point_channels`` follow the backbone (leave them out).
        data_preprocessor: defaults to ``PointDataPreprocessor``.
    """

    def __init__(self, backbone: dict, decode_head: dict,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None):
        if not isinstance(data_preprocessor, nn.Module):
            # Built here from mmseg's registry, so no default scope is needed.
            data_preprocessor = MODELS.build(data_preprocessor or dict(type='PointDataPreprocessor'))
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.decode_head = MODELS.build(derive_part_head_settings(decode_head, self.backbone))

    @staticmethod
    def categories(data_samples: Sequence[BaseDataElement], device: torch.device) -> Tensor:
        return torch.tensor([s.metainfo['category'] for s in data_samples], device=device)

    def logits(self, points: Tensor, categories: Tensor,
               point_mask: Optional[Tensor] = None) -> Tensor:
        """Part logits ``[B, N, parts]``; with ``point_mask`` (padding at the end of each row)
        each cloud's real points get what they get alone, the padding's logits mean nothing."""
        return self.decode_head(self.backbone(points, point_mask), points, categories)

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None,
                mode: str = 'tensor', point_mask: Optional[Tensor] = None
                ) -> Union[dict, list, Tensor]:
        if data_samples is None:
            raise ValueError('the point segmentor needs data samples carrying the object category')
        categories = self.categories(data_samples, inputs.device)
        logits = self.logits(inputs, categories, point_mask)
        if mode == 'tensor':
            return logits
        if mode == 'loss':
            return self.decode_head.loss(logits, padded_labels(data_samples, inputs.shape[1],
                                                               inputs.device))
        if mode == 'predict':
            preds = self.decode_head.predict(logits, categories)
            counts = real_point_counts(point_mask, inputs.shape[:2])
            for sample, pred, logit, count in zip(data_samples, preds, logits, counts):
                sample.pred_parts = pred[:count]
                sample.seg_logits = logit[:count]
            return list(data_samples)
        raise ValueError(f'unknown mode {mode!r}: use loss, predict or tensor')
