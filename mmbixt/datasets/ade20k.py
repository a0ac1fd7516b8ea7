"""ADE20K with early, explicit errors on a broken layout or broken samples.

``BiXTADE20KDataset`` checks the data root, the split folders or split list, that every image has
its label map and every label map its image when the dataset is built (before training starts);
``CheckSegSample`` checks each loaded sample (label file layout and bit depth, image and label
sizes, label values) and ``BiXTADE20KDataset`` names the files of any sample whose loading fails,
so nothing crashes deep inside the loss. The dataset checks live in :mod:`.checked_files`, the
per-file checks in :mod:`.seg_files`; ``tools/check_dataset.py`` runs the same ones over a whole
folder (``mmbixt.operations.checks``).
"""
from __future__ import annotations

from typing import Optional

from mmcv.transforms import BaseTransform
from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS, TRANSFORMS

from .checked_files import CheckedSegFiles, sample_files
from .seg_files import check_label_file, check_training_labels, size_mismatch_error


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


@DATASETS.register_module()
class BiXTADE20KDataset(CheckedSegFiles, ADE20KDataset):
    """ADE20K (``images/<split>/*.jpg``, ``annotations/<split>/*.png``, 0 = other) with the
    early, file-naming checks of :class:`CheckedSegFiles`."""
