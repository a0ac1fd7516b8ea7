"""Full-size predictions from low-resolution logits without the full-size logits.

mmseg predicts a pixel by resizing the decode head's logits ``[C, h, w]`` to the padded input
(``predict_by_feat``), cropping the padding off, flipping back, resizing again to the original
image (``postprocess_result``) and taking the argmax over the classes: two passes over a full-size
``[C, H, W]`` array and an argmax across it (59% of a 512 px Semantic FPN call on the fast path;
21 GB at once for a 7000x5000 image with 150 classes).

:func:`predict_labels` gets the same labels from the low-resolution logits directly. Each output
row (column) is a fixed convex combination of at most ``k`` neighbouring logit rows (columns): the
resizes, the crop and the flip compose into one :class:`AxisMap` per axis. So a pixel's logits lie,
class by class, between the minimum and the maximum of its ``k x k`` window of logits, and a class
whose window maximum is below the largest window minimum of any class can never win there. Most
windows have one class left (about 98% of them even with random weights): every pixel of such a
window takes it, with no resize at all. Only the pixels of windows with several candidates are
interpolated, for those candidates (class loop innermost, in chunks of ``TILE_ELEMENTS``); where
candidates are many (noise-like logits) the whole prediction is computed in channels-last strips
instead, as for logits past ``PLAN_ELEMENTS`` (the windows' bounds are four arrays of the logits'
size). Either way the ``[H, W]`` labels are the only full-size array.

Exactness: the values are computed in fp32 from the taps mmseg's bilinear resize uses, so the labels
are mmseg's except at near-ties: where mmseg's two best classes differ by about the rounding of
its own arithmetic (a few float32 ulps; for bf16 logits, which mmseg resizes in bf16, by a bf16
rounding: there mmseg's rounded values tie and its argmax takes the lower class, the fp32 values
here take the larger one). Exact ties go to the lower class index, as ``argmax`` does.

:class:`~mmbixt.models.segmentors.BiXTEncoderDecoder` predicts this way unless full-size
``seg_logits`` are kept (``test_cfg.keep_seg_logits``; see :func:`keeps_seg_logits`).
"""
from __future__ import annotations

import contextlib
import functools
import math
import threading
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from torch import Tensor

MAX_FULL_LOGITS = 2 ** 27   # elements of [classes, H, W]: 512 MiB in float32
TILE_ELEMENTS = 2 ** 22     # interpolated values held at once (16 MiB in float32)
# A pruned class's window maximum is below the winner's window minimum by more than this share of
# the largest |logit| (mmseg's float32 resize rounds within a few ulps of the exact value).
PRUNE_MARGIN = 8 * torch.finfo(torch.float32).eps
# Logits (elements) up to which the windows' bounds are computed at once (four arrays of their
# size); larger ones (slide inference's full-size logits of a large image) take the strips.
PLAN_ELEMENTS = 2 ** 26


# ------------------------------------------------------------------------ keeping seg_logits
_PREDICTIONS_ONLY = threading.local()


@contextlib.contextmanager
def predictions_only(enabled: bool = True) -> Iterator[None]:
    """Within the block, this thread's segmentors keep no full-size ``seg_logits`` unless their
    ``test_cfg.keep_seg_logits`` asks for them (``fast_inference`` enters it)."""
    before = getattr(_PREDICTIONS_ONLY, 'enabled', False)
    _PREDICTIONS_ONLY.enabled = enabled
    try:
        yield
    finally:
        _PREDICTIONS_ONLY.enabled = before


def keeps_seg_logits(test_cfg: Optional[dict]) -> bool:
    """Whether predictions keep mmseg's full-size ``seg_logits``: ``test_cfg.keep_seg_logits``
    when set (True for ``SegTTAModel``, which averages them), else yes outside
    :func:`predictions_only` and no inside it."""
    setting = (test_cfg or {}).get('keep_seg_logits')
    if setting is None:
        return not getattr(_PREDICTIONS_ONLY, 'enabled', False)
    return bool(setting)


def full_size_elements(num_classes: int, metainfo: dict) -> int:
    """How many values the image's logits hold at its original size."""
    height, width = metainfo['ori_shape'][:2]
    return num_classes * height * width


# ------------------------------------------------------------------------ one axis
def source_positions(out_size: int, in_size: int, align_corners: bool, start: int = 0,
                     stop: Optional[int] = None) -> tuple[Tensor, Tensor, Tensor]:
    """For output positions ``start..stop-1`` of a bilinear resize from ``in_size`` to
    ``out_size`` (``F.interpolate``'s convention): the two source indices and the weight of the
    second (float64)."""
    out = torch.arange(start, out_size if stop is None else stop, dtype=torch.float64)
    if align_corners:
        source = out * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    else:
        source = ((out + 0.5) * (in_size / out_size) - 0.5).clamp(min=0)
    first = source.floor().long().clamp(max=in_size - 1)
    second = (first + 1).clamp(max=in_size - 1)
    return first, second, (source - first).clamp(0, 1)


@dataclass
class AxisMap:
    """Output position ``i`` of one axis is ``sum_j weights[i, j] * logits[start[i] + j]``."""
    start: Tensor    # [n] long
    weights: Tensor  # [n, k] float32
    size: int        # logit positions on this axis

    @property
    def taps(self) -> int:
        return self.weights.shape[1]


class AxisChain:
    """What happens to one axis between the logits and the prediction, built from the output
    backwards: ``resize``, ``crop`` and ``flip`` steps, then :meth:`to_logits`."""

    def __init__(self, out_size: int) -> None:
        self.index = torch.arange(out_size)[:, None]             # [n, terms] positions
        self.weight = torch.ones(out_size, 1, dtype=torch.float64)
        self.size = out_size

    def resize_from(self, in_size: int, align_corners: bool) -> 'AxisChain':
        """The current positions came from a bilinear resize of ``in_size`` positions."""
        first, second, weight = source_positions(self.size, in_size, align_corners)
        index = self.index
        self.index = torch.cat([first[index], second[index]], 1)
        self.weight = torch.cat([self.weight * (1 - weight[index]), self.weight * weight[index]], 1)
        self.size = in_size
        return self

    def crop_from(self, offset: int, in_size: int) -> 'AxisChain':
        """The current positions are ``offset..`` of ``in_size`` positions."""
        self.index = self.index + offset
        self.size = in_size
        return self

    def flip(self) -> 'AxisChain':
        self.index = self.size - 1 - self.index
        return self

    def to_logits(self) -> AxisMap:
        """The map from the output positions to the ``self.size`` logit positions (terms of zero
        weight dropped, equal positions merged; every window inside the logits)."""
        used = self.weight != 0
        first = torch.where(used, self.index, self.size).min(1).values
        last = torch.where(used, self.index, -1).max(1).values
        taps = min(int((last - first).max()) + 1, self.size)
        start = first.clamp(max=self.size - taps)
        relative = (self.index - start[:, None]).clamp(0, taps - 1)  # zero-weight terms only
        weights = torch.zeros(len(start), taps, dtype=torch.float64).scatter_add_(
            1, relative, torch.where(used, self.weight, 0.0))
        return AxisMap(start, weights.float(), self.size)


def resize_map(out_size: int, in_size: int, align_corners: bool) -> AxisMap:
    """One bilinear resize (``F.interpolate``) from ``in_size`` to ``out_size`` positions."""
    return AxisChain(out_size).resize_from(in_size, align_corners).to_logits()


# ------------------------------------------------------------------------ labels
def predict_labels(logits: Tensor, rows: AxisMap, cols: AxisMap,
                   threshold: Optional[float] = None) -> Tensor:
    """``[1, H, W]`` labels of ``logits`` ``[C, h, w]`` mapped through ``rows`` and ``cols``:
    the argmax (long), or for one channel ``sigmoid > threshold`` (in the logits' dtype, as
    mmseg). Bounded memory: see the module's docstring."""
    dtype = logits.dtype
    logits = logits.float()  # exact for bf16 / fp16; the arithmetic below is fp32
    if logits.shape[0] == 1:
        return dense_labels(logits, rows, cols, threshold).to(dtype)
    largest = float(logits.abs().amax())
    if not math.isfinite(largest) or logits.numel() > PLAN_ELEMENTS:
        return dense_labels(logits, rows, cols)  # NaN / inf: argmax decides, as in mmseg
    plan = CandidatePlan.of(logits, rows, cols, PRUNE_MARGIN * largest)
    if plan.sparse_work() > plan.dense_work() / 2:
        return dense_labels(logits, rows, cols)
    return plan.labels()


def dense_labels(logits: Tensor, rows: AxisMap, cols: AxisMap,
                 threshold: Optional[float] = None) -> Tensor:
    """Every class of every pixel, in channels-last strips of full-width rows (class innermost):
    rows are combined at the logits' width, then widened, then reduced."""
    num_classes = logits.shape[0]
    height, width = len(rows.start), len(cols.start)
    by_pixel = logits.permute(1, 2, 0)  # [h, w, C]
    rows_per_strip = max(1, TILE_ELEMENTS // (num_classes * width * (cols.taps + 1)))
    labels = torch.empty((1, height, width),
                         dtype=torch.long if num_classes > 1 else logits.dtype)
    for top in range(0, height, rows_per_strip):
        bottom = min(top + rows_per_strip, height)
        band = weighted_taps(by_pixel, rows.start[top:bottom], rows.weights[top:bottom])
        strip = weighted_taps(band.transpose(0, 1), cols.start, cols.weights).transpose(0, 1)
        labels[0, top:bottom] = (strip.argmax(-1) if num_classes > 1
                                 else strip[..., 0].sigmoid() > threshold)
    return labels


def weighted_taps(values: Tensor, start: Tensor, weights: Tensor) -> Tensor:
    """``out[i] = sum_j weights[i, j] * values[start[i] + j]`` along the first dimension."""
    out = None
    for tap in range(weights.shape[1]):
        term = values[start + tap] * weights[:, tap].view(-1, *[1] * (values.dim() - 1))
        out = term if out is None else out.add_(term)
    return out


def window_extreme(logits: Tensor, row_taps: int, col_taps: int, extreme) -> Tensor:
    """``[C, h - row_taps + 1, w - col_taps + 1]``: each window's maximum (``extreme``
    ``torch.maximum``) or minimum, class by class."""
    height, width = logits.shape[1:]
    out = logits
    for tap in range(1, row_taps):
        out = extreme(out[:, :height - row_taps + 1], logits[:, tap:height - row_taps + 1 + tap])
    rows = out
    for tap in range(1, col_taps):
        out = extreme(out[:, :, :width - col_taps + 1], rows[:, :, tap:width - col_taps + 1 + tap])
    return out[:, :height - row_taps + 1, :width - col_taps + 1]


@dataclass
class CandidatePlan:
    """The classes that can win in each ``k x k`` window of logits, and the output pixels' windows."""
    logits: Tensor          # [C, h, w] float32
    rows: AxisMap
    cols: AxisMap
    winner: Tensor          # [h', w'] the class of the largest window minimum
    count: Tensor           # [h', w'] classes whose window maximum reaches it
    candidates: Tensor      # [C, h', w'] bool

    @classmethod
    def of(cls, logits: Tensor, rows: AxisMap, cols: AxisMap, margin: float) -> 'CandidatePlan':
        highest = window_extreme(logits, rows.taps, cols.taps, torch.maximum)
        lowest = window_extreme(logits, rows.taps, cols.taps, torch.minimum)
        floor, winner = lowest.max(0)
        candidates = highest >= floor - margin
        count = candidates.view(torch.uint8).sum(0, dtype=torch.int32)
        return cls(logits, rows, cols, winner, count, candidates)

    def most_candidates(self) -> int:
        return int(self.count.max())

    def mixed_pixels(self) -> int:
        """Output pixels whose window has more than one candidate."""
        rows = torch.bincount(self.rows.start, minlength=self.count.shape[0])
        cols = torch.bincount(self.cols.start, minlength=self.count.shape[1])
        return int((rows[:, None] * cols[None, :] * (self.count > 1)).sum())

    def sparse_work(self) -> int:
        return self.mixed_pixels() * self.most_candidates() * self.rows.taps * self.cols.taps

    def dense_work(self) -> int:
        return (len(self.rows.start) * len(self.cols.start) * self.logits.shape[0]
                * (self.cols.taps + 1))

    def labels(self) -> Tensor:
        """Each pixel of a one-candidate window takes it; the others are interpolated for their
        window's candidates (ascending class order: ties go to the lower class)."""
        height, width = len(self.rows.start), len(self.cols.start)
        labels = self.winner.index_select(0, self.rows.start).index_select(1, self.cols.start)
        mixed = self.count > 1
        if not bool(mixed.any()):
            return labels[None]
        windows = mixed.view(-1).nonzero()[:, 0]
        window_id = torch.full((mixed.numel(),), -1, dtype=torch.long)
        window_id[windows] = torch.arange(len(windows))
        most = self.most_candidates()
        # Candidates first, each group in ascending class order (a stable sort of the flags).
        flags = self.candidates.view(len(self.candidates), -1)[:, windows].T.view(torch.uint8)
        classes = torch.sort(flags, dim=1, descending=True, stable=True).indices[:, :most]
        valid = torch.arange(most) < self.count.view(-1)[windows][:, None]
        per_chunk = max(1, TILE_ELEMENTS // (most * self.rows.taps * self.cols.taps))
        rows_per_strip = max(1, per_chunk // width)
        flat_labels = labels.view(-1)
        for top in range(0, height, rows_per_strip):
            strip_rows = self.rows.start[top:top + rows_per_strip]
            strip = mixed.index_select(0, strip_rows).index_select(1, self.cols.start)
            pixels = strip.view(-1).nonzero()[:, 0] + top * width
            for first in range(0, len(pixels), per_chunk):
                pixel = pixels[first:first + per_chunk]
                y, x = pixel // width, pixel % width
                ids = window_id[self.rows.start[y] * mixed.shape[1] + self.cols.start[x]]
                flat_labels.index_copy_(0, pixel, self.interpolated_winner(
                    y, x, classes[ids], valid[ids]))
        return labels[None]

    def interpolated_winner(self, y: Tensor, x: Tensor, classes: Tensor, valid: Tensor) -> Tensor:
        """The best of ``classes`` ``[n, K]`` (``valid`` ones) at output pixels ``(y, x)``."""
        _, height, width = self.logits.shape
        row_taps = self.rows.start[y, None] + torch.arange(self.rows.taps)     # [n, kr]
        col_taps = self.cols.start[x, None] + torch.arange(self.cols.taps)     # [n, kc]
        offsets = (row_taps[:, :, None] * width + col_taps[:, None, :]).flatten(1)
        patch = self.logits.take(classes[:, :, None] * (height * width) + offsets[:, None, :])
        weights = (self.rows.weights[y][:, :, None] * self.cols.weights[x][:, None, :]).flatten(1)
        values = (patch * weights[:, None, :]).sum(-1)                         # [n, K]
        best = values.masked_fill_(~valid, float('-inf')).argmax(1, keepdim=True)
        return classes.gather(1, best)[:, 0]


# ------------------------------------------------------------------------ one image
def image_axis_maps(metainfo: dict, padded_size: Sequence[int], logits_size: Sequence[int],
                    align_corners: bool, resized_to: Optional[Sequence[int]] = None
                    ) -> Optional[tuple[AxisMap, AxisMap]]:
    """Rows and columns of mmseg's prediction for one image (its ``ori_shape``) as maps onto
    logits of ``logits_size``: crop the padding of the ``padded_size`` array (``padding_size``
    or ``img_padding_size``: left, right, top, bottom), flip back, resize to the original size.
    With ``resized_to`` the logits are the decode head's own, which mmseg first resizes to
    ``resized_to`` at the top left of the padded array; None where the crop reaches outside that
    region (mmseg's zeros there: no map of the logits)."""
    padding = metainfo.get('img_padding_size', metainfo.get('padding_size', [0] * 4))
    flip = metainfo.get('flip') and metainfo.get('flip_direction')
    if flip and flip not in ('horizontal', 'vertical'):
        raise ValueError(f'flip_direction {flip!r}: only horizontal and vertical flips can be '
                         'undone')
    return cached_axis_maps(tuple(metainfo['ori_shape'][:2]), tuple(int(p) for p in padding),
                            flip or None, tuple(padded_size), tuple(logits_size), align_corners,
                            None if resized_to is None else tuple(resized_to))


@functools.lru_cache(maxsize=64)
def cached_axis_maps(ori_shape: tuple, padding: tuple, flip: Optional[str], padded_size: tuple,
                     logits_size: tuple, align_corners: bool, resized_to: Optional[tuple]
                     ) -> Optional[tuple[AxisMap, AxisMap]]:
    """:func:`image_axis_maps` of hashable arguments (a dataset's images share a few shapes)."""
    left, right, top, bottom = padding
    maps = []
    for axis, (before, after), flipped in ((0, (top, bottom), flip == 'vertical'),
                                           (1, (left, right), flip == 'horizontal')):
        kept = padded_size[axis] - before - after
        chain = AxisChain(ori_shape[axis]).resize_from(kept, align_corners)
        if flipped:
            chain.flip()
        chain.crop_from(before, padded_size[axis])
        if resized_to is not None:
            if int(chain.index.max()) >= resized_to[axis]:
                return None
            chain.size = resized_to[axis]
            chain.resize_from(logits_size[axis], align_corners)
        maps.append(chain.to_logits())
    return maps[0], maps[1]


def set_prediction(data_sample, labels: Tensor) -> None:
    data_sample.set_data({'pred_sem_seg': PixelData(data=labels)})


def predict_in_tiles(logits: Tensor, size: tuple[int, int], align_corners: bool,
                     threshold: Optional[float] = None) -> Tensor:
    """``[1, H, W]`` labels of ``logits`` ``[C, h, w]`` resized to ``size`` (``F.interpolate``)."""
    return predict_labels(logits, resize_map(size[0], logits.shape[1], align_corners),
                          resize_map(size[1], logits.shape[2], align_corners), threshold)


def postprocess_in_tiles(logits: Tensor, data_sample, align_corners: bool,
                         threshold: Optional[float]) -> None:
    """What mmseg's ``postprocess_result`` does for one image (``logits`` ``[C, H, W]`` at the
    padded input size), without full-size ``seg_logits``: sets ``pred_sem_seg``."""
    rows, cols = image_axis_maps(data_sample.metainfo, logits.shape[1:], logits.shape[1:],
                                 align_corners)
    set_prediction(data_sample, predict_labels(logits, rows, cols, threshold))
