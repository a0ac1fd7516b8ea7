"""ADE20K with early, explicit errors on a broken layout or broken samples.

``BiXTADE20KDataset`` checks the data root, the split folders or split list, that every image has
its label map and every label map its image when the dataset is built (before training starts);
``CheckSegSample`` checks each loaded sample (label file layout and bit depth, image and label
sizes, label values) and ``BiXTADE20KDataset`` names the files of any sample whose loading fails,
so nothing crashes deep inside the loss. The per-file checks live in :mod:`.seg_files`;
``tools/check_dataset.py`` runs the same ones over a whole folder.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Optional

from mmcv.transforms import BaseTransform
from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS, TRANSFORMS

from .seg_files import SegDataError, check_label_file, check_training_labels, size_mismatch_error

# What tools/check_dataset.py runs on every sample: loading and the checks, no augmentation.
CHECK_PIPELINE = (dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='CheckSegSample'))


def sample_files(results: dict) -> str:
    files = [results.get('img_path'), results.get('seg_map_path')]
    return ' / '.join(str(f) for f in files if f)


@TRANSFORMS.register_module()
class CheckSegSample(BaseTransform):
    """Checks a sample right after ``LoadAnnotations``: the label file holds one class id per
    pixel (values above 255 in a 16-bit file are refused, not wrapped), the label map has the
    image's size and only holds class ids or ``ignore_index``.

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
        num_classes = results.get('num_classes', self.num_classes)
        reduce_zero_label = bool(results.get('reduce_zero_label'))
        if results.get('seg_map_path'):
            check_label_file(results['seg_map_path'], num_classes, reduce_zero_label,
                             self.ignore_index)
        image_hw = tuple(results['ori_shape'][:2])
        if tuple(label.shape) != image_hw:
            raise size_mismatch_error(files, results.get('img_path'), image_hw, label.shape[:2])
        if num_classes is not None:
            check_training_labels(label, files, num_classes, reduce_zero_label, self.ignore_index)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(num_classes={self.num_classes})'


def files_under(folder: str, suffix: str) -> set[str]:
    """Paths below ``folder`` (relative, without ``suffix``) of the files ending in ``suffix``."""
    found = set()
    for parent, _, names in os.walk(folder):
        for name in names:
            if name.endswith(suffix):
                found.add(osp.relpath(osp.join(parent, name), folder)[:-len(suffix)])
    return found


@DATASETS.register_module()
class BiXTADE20KDataset(ADE20KDataset):
    """ADE20K (``images/<split>/*.jpg``, ``annotations/<split>/*.png``, 0 = other) that fails
    early with the path and the problem: a missing data root, split folder or split list, an
    empty split, an image without its label map or a label map without its image, and a sample
    that cannot be loaded.

    Args:
        collect_layout_problems: instead of stopping at the first layout problem, list them all
            in ``layout_problems`` and keep the complete pairs (``tools/check_dataset.py``).
    """

    def __init__(self, *args, collect_layout_problems: bool = False, **kwargs) -> None:
        self.collect_layout_problems = collect_layout_problems
        self.layout_problems: list[str] = []
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        if self.data_root and not osp.isdir(self.data_root):
            raise SegDataError(f'data root {self.data_root} does not exist (expected the ADE20K '
                               'layout images/<split>, annotations/<split>)')
        img_dir = self.data_prefix.get('img_path', '')
        ann_dir = self.data_prefix.get('seg_map_path')
        for folder in (img_dir, ann_dir):
            if folder and not osp.isdir(folder):
                raise SegDataError(f'split folder {folder} does not exist')
        if self.ann_file and not osp.isdir(self.ann_file) and not osp.isfile(self.ann_file):
            raise SegDataError(f'split list {self.ann_file} does not exist')
        data_list = super().load_data_list()
        if not data_list:
            raise SegDataError(f'split list {self.ann_file} names no images' if self.ann_file
                               else f'split folder {img_dir} holds no {self.img_suffix} images')
        complete, problems = self.check_layout(data_list, img_dir, ann_dir)
        if problems and not self.collect_layout_problems:
            more = len(problems) - 1
            raise SegDataError(problems[0] + (f' (and {more} more problems: tools/check_dataset.py '
                                              'lists them all)' if more else ''))
        self.layout_problems = problems
        num_classes = len(self.metainfo['classes'])
        for info in complete:
            info['num_classes'] = num_classes
        return complete

    def check_layout(self, data_list: list[dict], img_dir: str, ann_dir: Optional[str]
                     ) -> tuple[list[dict], list[str]]:
        """The samples whose image and label map both exist, and a line per missing file."""
        problems, complete = [], []
        for info in data_list:
            if not osp.isfile(info['img_path']):  # only possible with a split list
                problems.append(f'{info["img_path"]}: listed in {self.ann_file} but does not exist')
            elif 'seg_map_path' in info and not osp.isfile(info['seg_map_path']):
                problems.append(f'{info["img_path"]}: its label map {info["seg_map_path"]} '
                                'does not exist')
            else:
                complete.append(info)
        if ann_dir and not self.ann_file:  # a split list may name a subset: then not checked
            images = files_under(img_dir, self.img_suffix)
            for stem in sorted(files_under(ann_dir, self.seg_map_suffix) - images):
                problems.append(f'{osp.join(ann_dir, stem + self.seg_map_suffix)}: label map '
                                f'without its image {osp.join(img_dir, stem + self.img_suffix)}')
        return complete, problems

    def prepare_data(self, idx: int):
        try:
            return super().prepare_data(idx)
        except SegDataError:
            raise
        except Exception as error:  # an undecodable file fails inside mmcv's loaders
            info = self.get_data_info(idx)
            if info.get('seg_map_path'):  # the label file's own check says what is wrong
                try:
                    check_label_file(info['seg_map_path'], info.get('num_classes'),
                                     bool(info.get('reduce_zero_label')))
                except SegDataError as reason:
                    raise reason from error
            raise SegDataError(f'{sample_files(info)}: cannot be loaded '
                               f'({type(error).__name__}: {error})') from error
