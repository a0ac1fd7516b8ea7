"""``BiXTEncoderDecoder``: mmseg's EncoderDecoder whose neck and heads follow the BiXT backbone."""
from __future__ import annotations

import copy
from typing import Optional, Sequence, Union

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor

from ...sizes import check_positive_size
from ..derive import BackboneGeometry, backbone_geometry, derive_setting
from ..quiet_init import QuietInitWeights
from ..necks.feature_pyramid import derive_neck_settings, pyramid_channels
from .postprocess import MAX_FULL_LOGITS, full_size_elements, postprocess_in_tiles

HeadCfg = Union[dict, Sequence[dict], None]


def head_input_channels(channels: list[int], head: dict) -> Union[int, list[int]]:
    """The ``in_channels`` an mmseg decode head takes from maps of ``channels``: one per
    ``in_index`` (a list), or the one map it reads (an int)."""
    index = head.get('in_index', -1)
    if isinstance(index, (list, tuple)):
        return [channels[i] for i in index]
    return channels[index]


def derive_head_settings(heads: HeadCfg, channels: list[int], setting: str, source: str) -> None:
    for i, head in enumerate([heads] if isinstance(heads, dict) else heads or []):
        name = setting if isinstance(heads, dict) else f'{setting}.{i}'
        derive_setting(head, 'in_channels', head_input_channels(channels, head),
                       f'{name}.in_channels', source)


def derive_from_backbone(geometry: BackboneGeometry, neck: Optional[dict],
                         decode_head: HeadCfg, auxiliary_head: HeadCfg) -> None:
    """Fills in (or checks) the neck's width and stride and the heads' input widths."""
    if neck is not None and neck.get('type') in ('BiXTFeaturePyramid', 'mmbixt.BiXTFeaturePyramid'):
        derive_neck_settings(neck, geometry.width, geometry.stride, geometry.source)
        channels, source = pyramid_channels(neck), 'the neck outputs (model.neck)'
    elif neck is None:
        channels = [geometry.width] * geometry.num_outs
        source = f'the backbone outputs ({geometry.source})'
    else:
        return  # another neck: its output widths are its own business
    derive_head_settings(decode_head, channels, 'model.decode_head', source)
    derive_head_settings(auxiliary_head, channels, 'model.auxiliary_head', source)


def check_sizes(settings: dict) -> None:
    """Refuses an input or window size with a side below 1, naming the setting."""
    named = (('data_preprocessor', 'size'), ('test_cfg', 'crop_size'), ('test_cfg', 'stride'))
    for group, key in named:
        value = (settings.get(group) or {}).get(key)
        if value is not None:
            check_positive_size(value, f'model.{group}.{key}')


@MODELS.register_module()
class BiXTEncoderDecoder(QuietInitWeights, EncoderDecoder):
    """mmseg's ``EncoderDecoder`` for BiXT backbones: the ``BiXTFeaturePyramid`` neck's
    ``in_channels`` / ``in_stride`` (and its ``fpn``'s ``in_channels``) and the heads'
    ``in_channels`` are derived from the backbone's width, token stride and outputs. Leave them
    out of a config; a value given that disagrees is refused here, at build time, naming both
    settings. An image whose full-size logits would exceed ``test_cfg.max_full_logits`` elements
    is post-processed in tiles (:mod:`~mmbixt.models.segmentors.postprocess`). Everything else is
    mmseg's ``EncoderDecoder`` (``test_cfg`` modes ``whole`` and ``slide``, ``SegTTAModel``,
    ``MMSegInferencer``).
    """

    def __init__(self, backbone: dict, decode_head: HeadCfg, neck: Optional[dict] = None,
                 auxiliary_head: HeadCfg = None, **kwargs) -> None:
        neck, decode_head, auxiliary_head = (copy.deepcopy(c) for c in
                                             (neck, decode_head, auxiliary_head))
        check_sizes(kwargs)
        geometry = backbone_geometry(backbone)
        if geometry is not None:
            derive_from_backbone(geometry, neck, decode_head, auxiliary_head)
        super().__init__(backbone=backbone, decode_head=decode_head, neck=neck,
                         auxiliary_head=auxiliary_head, **kwargs)

    def postprocess_result(self, seg_logits: Tensor, data_samples: Optional[list] = None) -> list:
        """mmseg's, per image; a large image's logits are resized and classified in tiles."""
        if data_samples is None:
            return super().postprocess_result(seg_logits, data_samples)
        limit = (self.test_cfg or {}).get('max_full_logits', MAX_FULL_LOGITS)
        for i, sample in enumerate(data_samples):
            if limit is None or full_size_elements(seg_logits.shape[1], sample.metainfo) <= limit:
                super().postprocess_result(seg_logits[i:i + 1], [sample])
            else:
                postprocess_in_tiles(seg_logits[i], sample, self.align_corners,
                                     self.decode_head.threshold)
        return data_samples
