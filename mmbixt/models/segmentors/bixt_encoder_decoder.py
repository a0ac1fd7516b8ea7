"""``BiXTEncoderDecoder``: mmseg's EncoderDecoder whose neck and heads follow the BiXT backbone."""
from __future__ import annotations

import copy
import difflib
import math
from collections import defaultdict
from typing import Any, Optional, Sequence, Union

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import add_prefix
from torch import Tensor, nn

from ...sizes import check_positive_size
from ..derive import BackboneGeometry, backbone_geometry, derive_setting, is_config_of
from ..quiet_init import QuietInitWeights
from ..necks.feature_pyramid import BiXTFeaturePyramid, derive_neck_settings, pyramid_channels
from .postprocess import (MAX_FULL_LOGITS, full_size_elements, image_axis_maps,
                          keeps_seg_logits, postprocess_in_tiles, predict_labels, set_prediction)

HeadCfg = Union[dict, Sequence[dict], None]
Shape = tuple[int, int]


def valid_shapes_of(inputs: Tensor, batch_img_metas: Sequence[dict]) -> Optional[list[Shape]]:
    """Each sample's real ``(h, w)`` (its ``img_shape``) inside the padded batch ``inputs``, top-left
    aligned as mmseg pads; None when no sample is padded (the backbone checks that they fit)."""
    size = tuple(inputs.shape[-2:])
    shapes = [tuple(int(v) for v in meta.get('img_shape', size)[:2]) for meta in batch_img_metas]
    return None if all(shape == size for shape in shapes) else shapes


def group_by_shape(shapes: Sequence[Shape]) -> dict[Shape, list[int]]:
    """The sample indices of each distinct shape, in order of first appearance."""
    groups: dict[Shape, list[int]] = defaultdict(list)
    for index, shape in enumerate(shapes):
        groups[shape].append(index)
    return groups


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
    if neck is not None and is_config_of(neck, BiXTFeaturePyramid):
        derive_neck_settings(neck, geometry.width, geometry.stride, geometry.source)
        channels, source = pyramid_channels(neck), 'the neck outputs (model.neck)'
    elif neck is None:
        channels = [geometry.width] * geometry.num_outs
        source = f'the backbone outputs ({geometry.source})'
    else:
        return  # another neck: its output widths are its own business
    derive_head_settings(decode_head, channels, 'model.decode_head', source)
    derive_head_settings(auxiliary_head, channels, 'model.auxiliary_head', source)


def resizes_as_mmseg(head: nn.Module) -> bool:
    """Whether ``head.predict`` is ``forward`` then mmseg's bilinear resize (``predict_by_feat``),
    so that its logits before the resize give its prediction."""
    return (isinstance(head, BaseDecodeHead)
            and type(head).predict is BaseDecodeHead.predict
            and type(head).predict_by_feat is BaseDecodeHead.predict_by_feat)


def resized_size(meta: dict) -> Shape:
    """The size mmseg's ``predict_by_feat`` resizes whole-image logits to."""
    return tuple(meta['pad_shape'][:2]) if 'pad_shape' in meta else tuple(meta['img_shape'][:2])


def check_sizes(settings: dict) -> None:
    """Refuses an input or window size with a side below 1, naming the setting."""
    named = (('data_preprocessor', 'size'), ('test_cfg', 'crop_size'), ('test_cfg', 'stride'))
    for group, key in named:
        value = (settings.get(group) or {}).get(key)
        if value is not None:
            check_positive_size(value, f'model.{group}.{key}')


# model.test_cfg: mmseg's (mode, crop_size, stride; scale_factor, subdivision_steps of its point
# head) and ours.
TEST_CFG_KEYS = ('mode', 'crop_size', 'stride', 'scale_factor', 'subdivision_steps',
                 'max_full_logits', 'max_windows', 'keep_seg_logits')
# Sliding windows one image may take (model.test_cfg.max_windows; None: no limit): 4096 is 64x64
# windows, far beyond any sensible stride (the ADE20K configs take 3 on a 512x2048 image).
MAX_WINDOWS = 4096


def check_test_cfg(test_cfg: Optional[dict]) -> None:
    """Refuses a ``model.test_cfg`` key no segmentor reads (a typo would be ignored), naming the
    closest valid one, and a slide stride larger than its window on any side (pixels between
    windows would get no prediction)."""
    for key in test_cfg or {}:
        if key not in TEST_CFG_KEYS:
            close = difflib.get_close_matches(key, TEST_CFG_KEYS, n=1)
            hint = f'did you mean {close[0]}?' if close else f'valid: {", ".join(TEST_CFG_KEYS)}'
            raise ValueError(f'model.test_cfg.{key}: no such setting ({hint}); fix the config')
    crop, stride = (test_cfg or {}).get('crop_size'), (test_cfg or {}).get('stride')
    if (test_cfg or {}).get('mode') == 'slide' and crop is not None and stride is not None:
        if any(s > c for s, c in zip(pair(stride), pair(crop))):
            raise ValueError(f'model.test_cfg.stride={tuple(pair(stride))} is larger than '
                             f'model.test_cfg.crop_size={tuple(pair(crop))} on a side: the pixels '
                             'between windows would get no prediction; use a stride of at most '
                             'the window (e.g. two thirds of it)')


def pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def window_count(height: int, width: int, crop: Any, stride: Any) -> int:
    """How many windows mmseg's slide inference runs on an image of ``height`` x ``width``."""
    (crop_h, crop_w), (stride_h, stride_w) = pair(crop), pair(stride)
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    columns = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    return rows * columns


@MODELS.register_module()
class BiXTEncoderDecoder(QuietInitWeights, EncoderDecoder):
    """mmseg's ``EncoderDecoder`` for BiXT backbones: the ``BiXTFeaturePyramid`` neck's
    ``in_channels`` / ``in_stride`` (and its ``fpn``'s ``in_channels``) and the heads'
    ``in_channels`` are derived from the backbone's width, token stride and outputs. Leave them
    out of a config; a value given that disagrees is refused here, at build time, naming both
    settings. Predictions come from the decode head's logits through a fused resize and argmax
    (:mod:`~mmbixt.models.segmentors.postprocess`: mmseg's labels, no full-size array) when
    full-size ``seg_logits`` are not kept: ``test_cfg.keep_seg_logits=False``, or under
    ``fast_inference`` unless it is True; and for every image whose full-size logits would exceed
    ``test_cfg.max_full_logits`` elements (None: no limit). Everything else is
    mmseg's ``EncoderDecoder`` (``test_cfg`` modes ``whole`` and ``slide``, ``SegTTAModel``,
    ``MMSegInferencer``).

    Padding never reaches a prediction: the ``img_shape`` of each sample (the real pixels inside a
    padded batch, as mmseg's data preprocessors record it) goes to the backbone as
    ``valid_shapes``, in training and test; at test time neck and heads run on each sample's own
    token grid, so with ``BiXTSegDataPreProcessor`` a batch of images of any sizes gives each
    image exactly its batch-1 logits.
    """

    def __init__(self, backbone: dict, decode_head: HeadCfg, neck: Optional[dict] = None,
                 auxiliary_head: HeadCfg = None, **kwargs) -> None:
        neck, decode_head, auxiliary_head = (copy.deepcopy(c) for c in
                                             (neck, decode_head, auxiliary_head))
        check_sizes(kwargs)
        check_test_cfg(kwargs.get('test_cfg'))
        geometry = backbone_geometry(backbone)
        if geometry is not None:
            derive_from_backbone(geometry, neck, decode_head, auxiliary_head)
        super().__init__(backbone=backbone, decode_head=decode_head, neck=neck,
                         auxiliary_head=auxiliary_head, **kwargs)

    def predict(self, inputs: Tensor, data_samples: Optional[list] = None) -> list:
        """mmseg's prediction. Unless full-size ``seg_logits`` are kept
        (:func:`~mmbixt.models.segmentors.postprocess.keeps_seg_logits`), a whole-image prediction
        is taken from the decode head's logits before any resize (``predict_labels``)."""
        if (data_samples is None or keeps_seg_logits(self.test_cfg)
                or (self.test_cfg or {}).get('mode', 'whole') != 'whole'
                or not resizes_as_mmseg(self.decode_head)):
            return super().predict(inputs, data_samples)
        metas = [sample.metainfo for sample in data_samples]
        heads = self.head_logits(inputs, metas)
        maps = [image_axis_maps(meta, padded, logits.shape[1:], self.align_corners, resized)
                for meta, (logits, resized, padded) in zip(metas, heads)]
        if any(m is None for m in maps):  # a crop reaching mmseg's zeros: mmseg's way
            return super().predict(inputs, data_samples)
        for sample, (logits, _, _), (rows, cols) in zip(data_samples, heads, maps):
            set_prediction(sample, predict_labels(logits, rows, cols, self.decode_head.threshold))
        return data_samples

    def postprocess_result(self, seg_logits: Tensor, data_samples: Optional[list] = None) -> list:
        """mmseg's, per image; without full-size ``seg_logits`` when they are not kept or would
        pass ``test_cfg.max_full_logits`` elements (the labels from ``predict_labels``)."""
        if data_samples is None:
            return super().postprocess_result(seg_logits, data_samples)
        limit = (self.test_cfg or {}).get('max_full_logits', MAX_FULL_LOGITS)
        keep = keeps_seg_logits(self.test_cfg)
        for i, sample in enumerate(data_samples):
            if keep and (limit is None
                         or full_size_elements(seg_logits.shape[1], sample.metainfo) <= limit):
                super().postprocess_result(seg_logits[i:i + 1], [sample])
            else:
                postprocess_in_tiles(seg_logits[i], sample, self.align_corners,
                                     self.decode_head.threshold)
        return data_samples

    # ---------------------------------------------------------------- padding-exact batches
    def extract_feat(self, inputs: Tensor, batch_img_metas: Optional[Sequence[dict]] = None
                     ) -> list[Tensor]:
        """Backbone (and neck) features; with ``batch_img_metas`` each sample's padding (outside
        its ``img_shape``) is masked in the backbone."""
        valid_shapes = None if batch_img_metas is None else valid_shapes_of(inputs, batch_img_metas)
        # With valid_shapes each sample's padding is masked: its valid tokens are what the
        # sample alone gives (zeros elsewhere).
        feats = self.backbone(inputs, valid_shapes=valid_shapes)
        return self.neck(feats) if self.with_neck else feats

    def loss(self, inputs: Tensor, data_samples: list) -> dict:
        """mmseg's losses, with the padding of smaller crops masked in the backbone."""
        feats = self.extract_feat(inputs, [sample.metainfo for sample in data_samples])
        losses = add_prefix(self.decode_head.loss(feats, data_samples, self.train_cfg), 'decode')
        if self.with_auxiliary_head:
            losses.update(self.auxiliary_losses(feats, data_samples))
        return losses

    def auxiliary_losses(self, feats: list[Tensor], data_samples: list) -> dict:
        """The auxiliary head(s)' losses, named as mmseg names them (``aux.``, ``aux_i.``)."""
        heads = self.auxiliary_head
        if isinstance(heads, nn.ModuleList):
            return {key: value for i, head in enumerate(heads) for key, value in
                    add_prefix(head.loss(feats, data_samples, self.train_cfg), f'aux_{i}').items()}
        return add_prefix(heads.loss(feats, data_samples, self.train_cfg), 'aux')

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """Logits ``[B, classes, H, W]``. In a padded batch each sample's logits are those it gets
        alone, at the top left of its row (mmseg's post-processing crops the padding off): the
        backbone runs once, masked; neck and heads run per group of equal-sized samples on their
        own token grid."""
        valid_shapes = valid_shapes_of(inputs, batch_img_metas)
        if valid_shapes is None:
            return super().encode_decode(inputs, batch_img_metas)
        logits = None
        for index, (height, width), feats, metas in self.grouped_features(inputs, batch_img_metas,
                                                                          valid_shapes):
            group = self.decode_head.predict(feats, metas, self.test_cfg)
            if logits is None:  # in the head's dtype (bf16 under autocast)
                logits = group.new_zeros((inputs.shape[0], self.out_channels)
                                         + tuple(inputs.shape[-2:]))
            logits[index, :, :height, :width] = group
        return logits

    def grouped_features(self, inputs: Tensor, batch_img_metas: list[dict],
                         valid_shapes: list[Shape]):
        """For each group of equal-sized samples of a padded batch: their indices, their size,
        the neck's features on their own token grid and their metainfo at that size."""
        feats = self.backbone(inputs, valid_shapes=valid_shapes)
        for (height, width), index in group_by_shape(valid_shapes).items():
            grid = (math.ceil(height / self.backbone.stride), math.ceil(width / self.backbone.stride))
            group_feats = [out[index, :, :grid[0], :grid[1]].contiguous() for out in feats]
            if self.with_neck:
                group_feats = self.neck(group_feats)
            metas = [dict(batch_img_metas[i], img_shape=(height, width), pad_shape=(height, width))
                     for i in index]
            yield index, (height, width), group_feats, metas

    def head_logits(self, inputs: Tensor, batch_img_metas: list[dict]
                    ) -> list[tuple[Tensor, Shape, Shape]]:
        """Per image of a whole-image batch: the decode head's logits ``[C, h, w]``, the size
        mmseg resizes them to and the size of the (padded) array they fill at the top left."""
        valid_shapes = valid_shapes_of(inputs, batch_img_metas)
        if valid_shapes is None:
            size = resized_size(batch_img_metas[0])
            return [(logits, size, size)
                    for logits in self.decode_head(self.extract_feat(inputs))]
        padded = tuple(inputs.shape[-2:])
        out: list = [None] * len(inputs)
        for index, size, feats, _ in self.grouped_features(inputs, batch_img_metas, valid_shapes):
            for i, logits in zip(index, self.decode_head(feats)):
                out[i] = (logits, size, padded)
        return out

    def slide_inference(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """mmseg's sliding windows, image by image over each image's own real pixels, so the
        windows of a padded batch are those of each image alone."""
        shapes = valid_shapes_of(inputs, batch_img_metas) or [tuple(inputs.shape[-2:])] * len(inputs)
        self.check_window_counts(shapes)
        logits = inputs.new_zeros((inputs.shape[0], self.out_channels) + tuple(inputs.shape[-2:]))
        for i, (height, width) in enumerate(shapes):
            # A copy of the metainfo: mmseg's slide writes each window's shape into it.
            logits[i:i + 1, :, :height, :width] = super().slide_inference(
                inputs[i:i + 1, :, :height, :width], [dict(batch_img_metas[i])])
        return logits

    def check_window_counts(self, shapes: Sequence[tuple[int, int]]) -> None:
        """Counts each image's windows before any runs; refuses more than
        ``test_cfg.max_windows`` (default :data:`MAX_WINDOWS`; None: no limit)."""
        limit = self.test_cfg.get('max_windows', MAX_WINDOWS)
        crop, stride = self.test_cfg.crop_size, self.test_cfg.stride
        for height, width in shapes:
            count = window_count(height, width, crop, stride)
            if limit is not None and count > limit:
                raise ValueError(
                    f'slide inference of a {height}x{width} image would run {count} windows of '
                    f'{tuple(pair(crop))} at model.test_cfg.stride={tuple(pair(stride))}, more '
                    f'than model.test_cfg.max_windows={limit}; raise the stride (e.g. two thirds '
                    'of crop_size), or max_windows if you mean it')

    def inference(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """``whole`` or ``slide`` inference (``test_cfg.mode``) of a batch whose images may differ
        in size."""
        mode = self.test_cfg.get('mode', 'whole')
        if mode not in ('whole', 'slide'):
            raise ValueError(f"model.test_cfg.mode is {mode!r}; use 'whole' or 'slide'")
        if mode == 'slide':
            return self.slide_inference(inputs, batch_img_metas)
        return self.whole_inference(inputs, batch_img_metas)
