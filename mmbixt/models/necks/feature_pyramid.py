"""``BiXTFeaturePyramid``: a single-stride BiXT output -> a 1/4 ... 1/32 feature pyramid."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor, nn

from ..derive import derive_setting
from ..quiet_init import QuietInitWeights

DEFAULT_OUT_STRIDES = (4, 8, 16, 32)


class CeilMaxPool2d(nn.Module):
    """``MaxPool2d(kernel, stride=kernel, ceil_mode=True)`` as -inf padding to a multiple of the
    kernel plus a plain max-pool: the same values (a partial window's max ignores the padding),
    and it exports to ONNX with dynamic sizes (ceil_mode pooling goes out with an indices output
    the exporter rejects). Always pads, so a traced graph keeps the padding for every size."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: Tensor) -> Tensor:
        pad_h, pad_w = -x.shape[-2] % self.kernel_size, -x.shape[-1] % self.kernel_size
        x = F.pad(x, (0, pad_w, 0, pad_h), value=float('-inf'))
        return F.max_pool2d(x, self.kernel_size, self.kernel_size)


def rescale_layers(channels: int, factor: float, norm_cfg: dict, act_cfg: dict) -> nn.Module:
    """Modules that rescale a map by ``factor`` (a power of two): one 2x ConvTranspose2d per
    doubling with norm + activation between them (as the XCiT/BEiT FPNs), identity at 1x and a
    max-pooling when shrinking."""
    if factor == 1:
        return nn.Identity()
    if factor < 1:
        return CeilMaxPool2d(round(1 / factor))  # covers odd sizes
    layers: list[nn.Module] = []
    for step in range(round(math.log2(factor))):
        if step:
            layers += [build_norm_layer(norm_cfg, channels)[1], build_activation_layer(act_cfg)]
        layers.append(nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def level_channels(in_channels: Union[int, Sequence[int]], levels: int) -> list[int]:
    """The channels of each of ``levels`` maps: one width for all, or one per level."""
    return [in_channels] * levels if isinstance(in_channels, int) else list(in_channels)


def derive_neck_settings(neck: dict, width: int, stride: int, source: str) -> None:
    """Fills in (or checks) a ``BiXTFeaturePyramid`` config's ``in_channels`` and ``in_stride``
    from the backbone's width and token stride, and its ``fpn``'s ``in_channels``."""
    derive_setting(neck, 'in_channels', width, 'model.neck.in_channels',
                   f'the width of {source}')
    derive_setting(neck, 'in_stride', stride, 'model.neck.in_stride',
                   f'the token stride of {source}')
    fpn = neck.get('fpn')
    if fpn is not None:
        widths = level_channels(neck['in_channels'],
                                len(neck.get('out_strides', DEFAULT_OUT_STRIDES)))
        derive_setting(fpn, 'in_channels', widths, 'model.neck.fpn.in_channels',
                       f'model.neck.in_channels ({source})')


def pyramid_channels(neck: dict) -> list[int]:
    """The channels of each map a ``BiXTFeaturePyramid`` config outputs (after its ``fpn``)."""
    fpn = neck.get('fpn')
    if fpn is not None:
        return [fpn['out_channels']] * fpn.get('num_outs', len(fpn['in_channels']))
    return level_channels(neck['in_channels'], len(neck.get('out_strides', DEFAULT_OUT_STRIDES)))


def scale_factor(in_stride: int, out_stride: int) -> float:
    factor = in_stride / out_stride
    if factor <= 0 or not math.log2(factor).is_integer():
        raise ValueError(f'cannot go from stride {in_stride} to stride {out_stride}: '
                         'the ratio must be a power of two')
    return factor


@MODELS.register_module()
class BiXTFeaturePyramid(QuietInitWeights, BaseModule):
    """Turns the maps of several BiXT layers, all at the token stride, into a multi-scale pyramid.

    Input ``i`` is rescaled from ``in_stride`` to ``out_strides[i]``: learnable 2x upsampling
    steps (ConvTranspose2d, norm + GELU between steps), identity, or max-pooling, all derived from
    the strides, so one neck serves BiXT-Ti/16, Ti/8 and Ti/4. An optional ``fpn`` neck config
    (e.g. mmseg's ``FPN`` for Semantic FPN) then runs on the rescaled maps.

    Under ``BiXTEncoderDecoder`` the input width and stride (and the ``fpn``'s input widths) come
    from the backbone: leave them out of the config.

    Args:
        in_channels: channels of each input map (the backbone width D), an int or one per level.
        in_stride: the backbone's token stride (4, 8 or 16).
        out_strides: the stride of each output level, one per input map.
        norm_cfg: norm between upsampling steps.
        act_cfg: activation between upsampling steps.
        fpn: config of a neck applied to the pyramid (top-down path); None returns it as is.
    """

    def __init__(self, in_channels: Union[int, Sequence[int], None] = None,
                 in_stride: Optional[int] = None, out_strides: Sequence[int] = DEFAULT_OUT_STRIDES,
                 norm_cfg: dict = dict(type='SyncBN', requires_grad=True),
                 act_cfg: dict = dict(type='GELU'), fpn: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if in_channels is None or in_stride is None:
            raise ValueError('BiXTFeaturePyramid needs in_channels and in_stride: build it inside '
                             "type='BiXTEncoderDecoder' (which takes them from the backbone) or "
                             'set both to the backbone width and token stride')
        channels = level_channels(in_channels, len(out_strides))
        if len(channels) != len(out_strides):
            raise ValueError(f'{len(channels)} in_channels for {len(out_strides)} out_strides')
        self.in_stride = in_stride
        self.out_strides = tuple(out_strides)
        self.rescales = nn.ModuleList(
            rescale_layers(ch, scale_factor(in_stride, stride), norm_cfg, act_cfg)
            for ch, stride in zip(channels, out_strides))
        self.fpn = MODELS.build(fpn) if fpn is not None else None

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if len(inputs) != len(self.rescales):
            raise ValueError(f'expected {len(self.rescales)} maps (one per out_stride), '
                             f'got {len(inputs)}')
        pyramid = tuple(rescale(x) for x, rescale in zip(inputs, self.rescales))
        return tuple(self.fpn(pyramid)) if self.fpn is not None else pyramid
