"""``BiXTEncoderDecoder``: mmseg's EncoderDecoder whose neck and heads follow the BiXT backbone."""
from __future__ import annotations

import copy
from typing import Optional, Sequence, Union

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS

from ..derive import BackboneGeometry, backbone_geometry, derive_setting
from ..necks.feature_pyramid import derive_neck_settings, pyramid_channels

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
    if neck is not None and neck.get('type') == 'BiXTFeaturePyramid':
        derive_neck_settings(neck, geometry.width, geometry.stride, geometry.source)
        channels, source = pyramid_channels(neck), 'the neck outputs (model.neck)'
    elif neck is None:
        channels = [geometry.width] * geometry.num_outs
        source = f'the backbone outputs ({geometry.source})'
    else:
        return  # another neck: its output widths are its own business
    derive_head_settings(decode_head, channels, 'model.decode_head', source)
    derive_head_settings(auxiliary_head, channels, 'model.auxiliary_head', source)


@MODELS.register_module()
class BiXTEncoderDecoder(EncoderDecoder):
    """mmseg's ``EncoderDecoder`` for BiXT backbones: the ``BiXTFeaturePyramid`` neck's
    ``in_channels`` / ``in_stride`` (and its ``fpn``'s ``in_channels``) and the heads'
    ``in_channels`` are derived from the backbone's width, token stride and outputs. Leave them
    out of a config; a value given that disagrees is refused here, at build time, naming both
    settings. Everything else is mmseg's ``EncoderDecoder`` (``test_cfg`` modes ``whole`` and
    ``slide``, ``SegTTAModel``, ``MMSegInferencer``).
    """

    def __init__(self, backbone: dict, decode_head: HeadCfg, neck: Optional[dict] = None,
                 auxiliary_head: HeadCfg = None, **kwargs) -> None:
        neck, decode_head, auxiliary_head = (copy.deepcopy(c) for c in
                                             (neck, decode_head, auxiliary_head))
        geometry = backbone_geometry(backbone)
        if geometry is not None:
            derive_from_backbone(geometry, neck, decode_head, auxiliary_head)
        super().__init__(backbone=backbone, decode_head=decode_head, neck=neck,
                         auxiliary_head=auxiliary_head, **kwargs)
