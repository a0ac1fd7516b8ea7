"""Checks of one sample's files that need no pipeline step: the dataset runs them itself (when it
is built, or before each sample is loaded), so a user's own mmseg pipeline gets them too.

The label values are read from the file at its bit depth and compared with the classes as the
file stores them (``reduce_zero_label``: 0 = other); the image's size comes from its header.
"""
from __future__ import annotations

import os
from collections import Counter

import numpy as np
from PIL import Image

from .seg_files import SegDataError, out_of_range_error, open_label_map, size_mismatch_error


def stored_label_values(num_classes: int, reduce_zero_label: bool, ignore_index: int) -> set[int]:
    """The values a label file may hold (before ``reduce_zero_label`` turns 0 into ignored)."""
    if reduce_zero_label:
        return set(range(num_classes + 1)) | {255}
    return set(range(num_classes)) | {ignore_index}


def image_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of an image from its header (nothing decoded)."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, ValueError) as error:
        raise SegDataError(f'{path}: cannot be loaded (not a readable image: {error})') from None


def check_sample_files(info: dict, ignore_index: int = 255) -> None:
    """Refuses a sample (a dataset's data info) whose label map is not one class id per pixel,
    holds values beyond ``info['num_classes']``, or has another size than its image."""
    label_path, image_path = info.get('seg_map_path'), info['img_path']
    if not label_path:
        return
    with open_label_map(label_path) as label_file:
        values = np.asarray(label_file)
    files = f'{image_path} / {label_path}'
    num_classes = info.get('num_classes')
    if num_classes is not None and not info.get('label_map'):  # a label map renames values
        reduce_zero_label = bool(info.get('reduce_zero_label'))
        found = np.unique(values)
        allowed = stored_label_values(num_classes, reduce_zero_label, ignore_index)
        bad = [int(v) for v in found if int(v) not in allowed]
        if bad:
            raise out_of_range_error(label_path, bad, num_classes, reduce_zero_label, ignore_index)
    image_hw = image_size(image_path)
    if image_hw != values.shape[:2]:
        raise size_mismatch_error(files, image_path, image_hw, values.shape[:2])


def empty_split_message(img_dir: str, img_suffix: str) -> str:
    """Why a split folder gave no samples, with the suffixes its files do have."""
    suffixes = Counter(os.path.splitext(name)[1] for _, _, names in os.walk(img_dir)
                       for name in names)
    found = ', '.join(f'{count} {suffix or "(none)"}' for suffix, count in suffixes.most_common(4))
    return (f'0 images with suffix {img_suffix} under {img_dir}: set the dataset\'s img_suffix '
            f'to the images\' suffix (found: {found or "no files"})')
