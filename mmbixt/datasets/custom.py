"""Your own segmentation data: images and single-channel label maps in two folders per split.

``BiXTSegDataset`` is mmseg's ``BaseSegDataset`` (the same settings: ``data_root``,
``data_prefix``, ``img_suffix``, ``seg_map_suffix``, ``reduce_zero_label``, ``metainfo``) with the
checks of :class:`~mmbixt.datasets.checked_files.CheckedSegFiles`, and every label map checked
when the dataset is built, so each data error names its file before the first iteration.
"""
from __future__ import annotations

from typing import Optional

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .checked_files import CheckedSegFiles
from .seg_files import SegDataError


@DATASETS.register_module()
class BiXTSegDataset(CheckedSegFiles, BaseSegDataset):
    """A dataset of your own: ``metainfo=dict(classes=(...), palette=[...])`` names the classes
    (label value i = ``classes[i]``; with ``reduce_zero_label=True`` value 0 is "other", ignored,
    and value i = ``classes[i - 1]``). Refuses a config without classes, and checks the folders,
    the pairs of files and every label map when built (``check_labels_at_build=False`` leaves the
    label maps to the moment each sample is loaded, for very large datasets)."""

    LAYOUT_HINT = ('set data_root to the folder holding the data_prefix folders img_path and '
                   'seg_map_path')
    CHECK_LABELS_AT_BUILD = True

    def __init__(self, *args, metainfo: Optional[dict] = None, **kwargs) -> None:
        classes = (metainfo or {}).get('classes')
        if not classes:
            raise SegDataError('BiXTSegDataset needs the class names: set the dataset\'s '
                               "metainfo=dict(classes=('background', ...), palette=[[0, 0, 0], "
                               '...]) in the config (see configs/bixt/my_data_upernet_bixt_ti.py)')
        super().__init__(*args, metainfo=metainfo, **kwargs)
