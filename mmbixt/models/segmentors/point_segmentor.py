"""``PointPartSegmentor``: backbone + part head on point clouds, as an mmengine model."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement
from mmseg.registry import MODELS
from torch import Tensor, nn

from ..derive import derive_setting
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


@MODELS.register_module()
class PointPartSegmentor(QuietInitWeights, BaseModel):
    """Part segmentation of point clouds.

    ``mode='loss'`` returns the losses; ``'predict'`` returns the data samples with ``pred_parts
    [N]`` (restricted to each shape's category) and ``seg_logits [N, parts]``; ``'tensor'`` the
    logits ``[B, N, parts]``. The object category comes from each sample's metainfo ``category``.

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

    def logits(self, points: Tensor, categories: Tensor) -> Tensor:
        return self.decode_head(self.backbone(points), points, categories)

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None,
                mode: str = 'tensor') -> Union[dict, list, Tensor]:
        if data_samples is None:
            raise ValueError('the point segmentor needs data samples carrying the object category')
        categories = self.categories(data_samples, inputs.device)
        logits = self.logits(inputs, categories)
        if mode == 'tensor':
            return logits
        if mode == 'loss':
            gt_parts = torch.stack([s.gt_parts for s in data_samples]).to(inputs.device)
            return self.decode_head.loss(logits, gt_parts)
        if mode == 'predict':
            preds = self.decode_head.predict(logits, categories)
            for sample, pred, logit in zip(data_samples, preds, logits):
                sample.pred_parts = pred
                sample.seg_logits = logit
            return list(data_samples)
        raise ValueError(f'unknown mode {mode!r}: use loss, predict or tensor')
