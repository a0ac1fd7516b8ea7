"""ADE20K with early, explicit errors on a broken layout or broken samples.

``BiXTADE20KDataset`` checks the data root, the split folders and that every image has its label
map when the dataset is built (before training starts); ``CheckSegSample`` checks each loaded
sample (image and label sizes, label values) and ``BiXTADE20KDataset`` names the files of any
sample whose loading fails, so nothing crashes deep inside the loss.
"""
from __future__ import annotations

import os.path as osp
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS, TRANSFORMS


class SegDataError(ValueError):
    """A data root, split or sample that cannot be used; the message names the file."""


def sample_files(results: dict) -> str:
    files = [results.get('img_path'), results.get('seg_map_path')]
    return ' / '.join(str(f) for f in files if f)


@TRANSFORMS.register_module()
class CheckSegSample(BaseTransform):
    """Checks a sample right after ``LoadAnnotations``: the label map has the image's size and
    only holds class ids or ``ignore_index``.

    The number of classes comes from the sample (``BiXTADE20KDataset`` stores it) or from
    ``num_classes``. Values are reported as stored in the file (before ``reduce_zero_label``).
    """

    def __init__(self, num_classes: Optional[int] = None, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        label = results.get('gt_seg_map')
        if label is None:
            return results
        files = sample_files(results)
        image_size = tuple(results['ori_shape'][:2])
        if tuple(label.shape[:2]) != image_size:
            raise SegDataError(f'{files}: image is {image_size[1]}x{image_size[0]} (WxH) but its '
                               f'label map is {label.shape[1]}x{label.shape[0]}')
        num_classes = results.get('num_classes', self.num_classes)
        if num_classes is None:
            return results
        bad = np.unique(label[(label >= num_classes) & (label != self.ignore_index)])
        if bad.size:
            shift = 1 if results.get('reduce_zero_label') else 0
            raise SegDataError(
                f'{files}: label values {(bad + shift).tolist()[:10]} exceed the {num_classes} '
                f'classes (allowed values: {shift}..{num_classes - 1 + shift}'
                + (', 0 = other/ignored)' if shift else f' and {self.ignore_index} = ignored)'))
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(num_classes={self.num_classes})'


@DATASETS.register_module()
class BiXTADE20KDataset(ADE20KDataset):
    """ADE20K (``images/<split>/*.jpg``, ``annotations/<split>/*.png``, 0 = other) that fails
    early with the path and the problem: a missing data root or split folder, an empty split, an
    image without its label map, and a sample that cannot be loaded."""

    def load_data_list(self) -> list[dict]:
        if self.data_root and not osp.isdir(self.data_root):
            raise SegDataError(f'data root {self.data_root} does not exist (expected the ADE20K '
                               'layout images/<split>, annotations/<split>)')
        img_dir = self.data_prefix.get('img_path', '')
        ann_dir = self.data_prefix.get('seg_map_path')
        for folder in (img_dir, ann_dir):
            if folder and not osp.isdir(folder):
                raise SegDataError(f'split folder {folder} does not exist')
        data_list = super().load_data_list()
        if not data_list:
            raise SegDataError(f'split folder {img_dir} holds no {self.img_suffix} images')
        num_classes = len(self.metainfo['classes'])
        for info in data_list:
            if 'seg_map_path' in info and not osp.isfile(info['seg_map_path']):
                raise SegDataError(f'{info["img_path"]}: its label map {info["seg_map_path"]} '
                                   'does not exist')
            info['num_classes'] = num_classes
        return data_list

    def prepare_data(self, idx: int):
        try:
            return super().prepare_data(idx)
        except SegDataError:
            raise
        except Exception as error:  # an undecodable file fails inside mmcv's loaders
            raise SegDataError(f'{sample_files(self.get_data_info(idx))}: cannot be loaded '
                               f'({type(error).__name__}: {error})') from error
