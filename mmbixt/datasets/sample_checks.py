"""Checks of one sample's files that need no pipeline step: the dataset runs them itself (when it
is built, or before each sample is loaded), so a user's own mmseg pipeline gets them too.

The label values are read from the file at its bit depth and compared with the classes as the
file stores them (``reduce_zero_label``: 0 = other); the image's size comes from its header.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image

from .image_files import MAX_PIXELS_VARIABLE, max_image_pixels
from .seg_files import SegDataError, decoded_label_map, out_of_range_error, size_mismatch_error


def stored_label_values(num_classes: int, reduce_zero_label: bool, ignore_index: int) -> set[int]:
    """The values a label file may hold (before ``reduce_zero_label`` turns 0 into ignored)."""
    if reduce_zero_label:
        return set(range(num_classes + 1)) | {255}
    return set(range(num_classes)) | {ignore_index}


def image_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of an image from its header (nothing decoded)."""
    limit, Image.MAX_IMAGE_PIXELS = max_image_pixels(), None  # a header read decodes nothing
    try:
        with Image.open(path) as image:
            height, width = image.height, image.width
    except (OSError, ValueError) as error:
        raise SegDataError(f'{path}: cannot be loaded (not a readable image: {error})') from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if limit and height * width > limit:
        raise SegDataError(
            f'{path}: image is {width}x{height} ({height * width / 1e6:.0f} megapixels), above the '
            f'limit of {limit / 1e6:.0f} megapixels that bounds the memory one sample takes; '
            f'downscale it, or raise the limit if you trust the file ({MAX_PIXELS_VARIABLE}, '
            '0 lifts it)')
    return height, width


def check_sample_files(info: dict, ignore_index: int = 255) -> Optional[np.ndarray]:
    """Refuses a sample (a dataset's data info) whose image is not readable or too large, whose
    label map is not one class id per pixel (lossless, decodable), holds values beyond
    ``info['num_classes']``, or has another size than its image; returns the label map's values
    as stored (None for a sample without one)."""
    label_path, image_path = info.get('seg_map_path'), info['img_path']
    if not label_path:
        image_size(image_path)
        return None
    image_hw = image_size(image_path)
    values = decoded_label_map(label_path)
    files = f'{image_path} / {label_path}'
    num_classes = info.get('num_classes')
    if num_classes is not None and not info.get('label_map'):  # a label map renames values
        reduce_zero_label = bool(info.get('reduce_zero_label'))
        found = np.unique(values)
        allowed = stored_label_values(num_classes, reduce_zero_label, ignore_index)
        bad = [int(v) for v in found if int(v) not in allowed]
        if bad:
            raise out_of_range_error(label_path, bad, num_classes, reduce_zero_label, ignore_index)
    if image_hw != values.shape[:2]:
        raise size_mismatch_error(files, image_path, image_hw, values.shape[:2])
    return values
