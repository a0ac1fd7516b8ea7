"""A full-size prediction from low-resolution logits in bounded memory.

mmseg's ``postprocess_result`` resizes each image's logits to its original size in one call: a
7000x5000 image with 150 classes asks for 21 GB at once. :func:`predict_in_tiles` resizes
(bilinear, mmseg's ``align_corners``) and takes the argmax (or the sigmoid threshold of a
one-channel head) strip by strip, so at most ``TILE_ELEMENTS`` resized logits exist at any time; the
prediction is then the only full-size array. Used by
:class:`~mmbixt.models.segmentors.BiXTEncoderDecoder` for every image whose full-size logits would
exceed ``test_cfg.max_full_logits`` elements (default :data:`MAX_FULL_LOGITS`; None: never); smaller
images keep mmseg's path, which also keeps their full-size ``seg_logits``. ``SegTTAModel`` averages
those over its augmentations, so ``tools/test.py --tta`` sets ``max_full_logits=None``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from torch import Tensor

MAX_FULL_LOGITS = 2 ** 27   # elements of [classes, H, W]: 512 MiB in float32
TILE_ELEMENTS = 2 ** 24     # resized logits held at once (64 MiB in float32)


def full_size_elements(num_classes: int, metainfo: dict) -> int:
    """How many values the image's logits hold at its original size."""
    height, width = metainfo['ori_shape'][:2]
    return num_classes * height * width


def unpadded_unflipped(logits: Tensor, metainfo: dict) -> Tensor:
    """One image's ``[C, h, w]`` logits without the padding the pipeline added (``padding_size``
    or ``img_padding_size``: left, right, top, bottom) and flipped back as the input was."""
    left, right, top, bottom = metainfo.get('img_padding_size',
                                            metainfo.get('padding_size', [0] * 4))
    height, width = logits.shape[-2:]
    logits = logits[:, top:height - bottom, left:width - right]
    if metainfo.get('flip'):
        direction = metainfo.get('flip_direction')
        if direction not in ('horizontal', 'vertical'):
            raise ValueError(f'flip_direction {direction!r}: only horizontal and vertical flips '
                             'can be undone')
        logits = logits.flip(-1 if direction == 'horizontal' else -2)
    return logits


def source_positions(out_size: int, in_size: int, align_corners: bool, start: int, stop: int
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """For output positions ``start..stop-1`` of a bilinear resize from ``in_size`` to
    ``out_size`` (``F.interpolate``'s convention): the two source indices and the weight of the
    second."""
    out = torch.arange(start, stop, dtype=torch.float64)
    if align_corners:
        source = out * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    else:
        source = ((out + 0.5) * (in_size / out_size) - 0.5).clamp(min=0)
    first = source.floor().long().clamp(max=in_size - 1)
    second = (first + 1).clamp(max=in_size - 1)
    return first, second, (source - first).float()


def resized_rows(logits: Tensor, height: int, align_corners: bool, start: int, stop: int
                 ) -> Tensor:
    """Rows ``start..stop-1`` of the bilinear resize of ``logits`` ``[C, h, w]`` to ``height``
    rows, at the input width: ``[C, stop - start, w]``."""
    upper, lower, weight = (p.to(logits.device) for p in source_positions(
        height, logits.shape[1], align_corners, start, stop))
    return torch.lerp(logits[:, upper], logits[:, lower], weight[:, None].to(logits.dtype))


def predict_in_tiles(logits: Tensor, size: tuple[int, int], align_corners: bool,
                     threshold: Optional[float] = None) -> Tensor:
    """``[1, H, W]`` (``size``) class indices of ``logits`` ``[C, h, w]`` resized to ``size``:
    the argmax, or for one channel ``sigmoid > threshold`` (in the logits' dtype, as mmseg).

    Works in full-width strips of output rows: each strip's rows are interpolated by hand (a
    strip starts mid-image, where ``F.interpolate``'s own row positions would not apply), then
    ``F.interpolate`` widens the strip (its rows map to themselves; its columns are the whole
    image's), so only the strip's ``[C, rows, W]`` values exist at once."""
    num_classes = logits.shape[0]
    height, width = size
    rows_per_strip = max(1, TILE_ELEMENTS // (num_classes * width))
    dtype = torch.long if num_classes > 1 else logits.dtype
    prediction = torch.empty((1, height, width), dtype=dtype, device=logits.device)
    for top in range(0, height, rows_per_strip):
        bottom = min(top + rows_per_strip, height)
        band = resized_rows(logits, height, align_corners, top, bottom)
        strip = F.interpolate(band[None], size=(bottom - top, width), mode='bilinear',
                              align_corners=align_corners)[0]
        prediction[0, top:bottom] = (strip.argmax(0) if num_classes > 1
                                     else (strip[0].sigmoid() > threshold))
    return prediction


def postprocess_in_tiles(logits: Tensor, data_sample, align_corners: bool,
                         threshold: Optional[float]) -> None:
    """What mmseg's ``postprocess_result`` does for one image (``logits`` ``[C, h, w]``), in
    bounded memory: sets ``pred_sem_seg`` at the original size; full-size ``seg_logits`` are not
    kept (they are what does not fit)."""
    logits = unpadded_unflipped(logits, data_sample.metainfo)
    size = tuple(data_sample.metainfo['ori_shape'][:2])
    data_sample.set_data({'pred_sem_seg': PixelData(
        data=predict_in_tiles(logits, size, align_corners, threshold))})
