"""``BiXTSegDataPreProcessor``: mmseg's ``SegDataPreProcessor`` that also batches test images of
different sizes, recording where each image's real pixels are."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS
from torch import Tensor

Padding = tuple[int, int, int, int]  # (left, right, top, bottom), mmseg's order


def same_size(images: Any) -> bool:
    """Whether ``images`` (a batch tensor or a list of ``[C, H, W]``) share one size."""
    return isinstance(images, Tensor) or len({tuple(img.shape[-2:]) for img in images}) <= 1


def pad_bottom_right(images: Sequence[Tensor], value: float) -> Tensor:
    """``[1, C, h_i, w_i]`` images padded at the bottom and right to the largest ``(H, W)`` and
    stacked."""
    height = max(img.shape[-2] for img in images)
    width = max(img.shape[-1] for img in images)
    return torch.cat([F.pad(img, (0, width - img.shape[-1], 0, height - img.shape[-2]),
                            value=value) for img in images])


def record_padding(sample, image: Tensor, batch_shape: tuple[int, int]) -> None:
    """Records how ``image`` (as the pipeline gave it) sits in the batch: mmseg's
    ``img_padding_size`` (its post-processing crops it off) and the batch's ``pad_shape``;
    ``img_shape`` (the real pixels, top-left) stays as the pipeline set it."""
    height, width = batch_shape
    sample.set_metainfo(dict(img_padding_size=[0, width - image.shape[-1], 0,
                                                height - image.shape[-2]],
                             pad_shape=batch_shape))


@MODELS.register_module()
class BiXTSegDataPreProcessor(SegDataPreProcessor):
    """mmseg's ``SegDataPreProcessor`` (same arguments, same training batches) that also takes a
    test batch of images of different sizes: each image is prepared as mmseg prepares it alone,
    then zero-padded at the bottom and right to the batch's largest size. Each sample keeps its
    real ``img_shape`` and gets the added padding in ``img_padding_size`` (cropped off by mmseg's
    post-processing) and the batch's ``pad_shape``; ``BiXTEncoderDecoder`` reads them, so every
    image gets exactly the logits it gets alone.
    """

    def prepare_alone(self, img: Tensor, sample) -> Tensor:
        """``[1, C, h, w]``: one test image as mmseg prepares it in a batch of its own."""
        return super().forward(dict(inputs=[img], data_samples=[sample]), False)['inputs']

    def forward(self, data: dict, training: bool = False) -> dict[str, Any]:
        if training or same_size(data['inputs']):
            return super().forward(data, training)
        samples: Optional[list] = data.get('data_samples')
        if samples is None:
            raise ValueError('a test batch of images of different sizes needs its data samples '
                             '(to record each image\'s size); pass data_samples or batch_size=1')
        prepared = [self.prepare_alone(img, sample) for img, sample in zip(data['inputs'], samples)]
        inputs = pad_bottom_right(prepared, self.pad_val)
        for sample, image in zip(samples, data['inputs']):
            record_padding(sample, image, tuple(inputs.shape[-2:]))
        return dict(inputs=inputs, data_samples=samples)
