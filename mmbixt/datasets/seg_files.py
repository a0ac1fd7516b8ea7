"""Checks of segmentation files (images and label maps), shared by the datasets, the pipeline
check ``CheckSegSample`` and ``tools/check_dataset.py``; every error names the file.

mmseg's ``LoadAnnotations`` reads a label map with ``squeeze().astype(np.uint8)``: a 16-bit value
257 would become class 1, an RGB label map would reach the metric as three channels, and a side
of one pixel would be squeezed away. The label file's header (read without decoding) tells which
of these applies; only a label map deeper than 8 bits is decoded again, at its bit depth.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ..errors import MMBiXTError
from .image_files import MAX_PIXELS_VARIABLE, max_image_pixels

SINGLE_CHANNEL_8BIT = {'1', 'L', 'P'}  # read exactly by LoadAnnotations
SINGLE_CHANNEL_WIDE = {'I;16', 'I;16L', 'I;16B', 'I;16N', 'I'}  # wrapped by its uint8 cast
# Formats that store every pixel exactly: a lossy one (JPEG) shifts class ids near the edges.
LOSSLESS_FORMATS = {'PNG', 'BMP', 'TIFF', 'PPM', 'GIF', 'TGA'}
EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}  # 90 or 270 degrees: width and height swap


class SegDataError(MMBiXTError, ValueError):
    """A data root, split or sample that cannot be used; the message names the file."""


def allowed_values(num_classes: int, reduce_zero_label: bool, ignore_index: int = 255) -> str:
    """The label values a file may hold, in words."""
    if reduce_zero_label:
        return f'0..{num_classes} with 0 = other (ignored), and 255 = ignored'
    return f'0..{num_classes - 1} and {ignore_index} = ignored'


def out_of_range_error(files: str, file_values: Sequence[int], num_classes: int,
                       reduce_zero_label: bool, ignore_index: int = 255) -> SegDataError:
    """The error for label values (as stored in the file) outside the classes."""
    shown = [int(v) for v in file_values][:10]
    return SegDataError(f'{files}: label values {shown} exceed the {num_classes} classes '
                        f'(allowed values: {allowed_values(num_classes, reduce_zero_label, ignore_index)})')


def open_label_map(path: str) -> Image.Image:
    """The label map ``path`` opened (header only) after checking that it holds one class id per
    pixel: a single channel of integers, at least 2 pixels on each side."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the header only
    try:
        image = Image.open(path)
    except (OSError, ValueError) as error:
        raise SegDataError(f'{path}: label map is not a readable image ({error})') from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    pixel_limit = max_image_pixels()
    if pixel_limit and image.width * image.height > pixel_limit:
        raise SegDataError(
            f'{path}: label map is {image.width}x{image.height}, above the limit of '
            f'{pixel_limit / 1e6:.0f} megapixels that bounds the memory one sample takes; '
            f'downscale the sample, or raise {MAX_PIXELS_VARIABLE} if you trust the file')
    if image.format not in LOSSLESS_FORMATS:
        raise SegDataError(
            f'{path}: label map holds {image.format} data (a lossy format: it shifts class ids '
            'near every edge), whatever its name; save label maps as PNG files of class ids')
    if image.mode == 'F':
        raise SegDataError(f'{path}: label map holds floating-point values; it must hold integer '
                           'class ids (an 8- or 16-bit single-channel PNG)')
    if image.mode not in SINGLE_CHANNEL_8BIT | SINGLE_CHANNEL_WIDE:
        raise SegDataError(
            f'{path}: label map has {len(image.getbands())} channels ({image.mode}); a label map '
            'holds one class id per pixel (a single-channel 8- or 16-bit PNG), not colours: '
            'convert it to class ids')
    if min(image.size) < 2:
        raise SegDataError(f'{path}: label map is {image.width}x{image.height} pixels; label maps '
                           'and their images need at least 2 pixels on each side')
    return image


def decoded_label_map(path: str) -> np.ndarray:
    """The class ids of the label map ``path`` (checked by :func:`open_label_map`); a file that
    fails to decode (truncated, corrupt) is refused naming it."""
    with open_label_map(path) as image:
        try:
            return np.asarray(image)
        except (OSError, ValueError, SyntaxError) as error:
            raise SegDataError(f'{path}: label map cannot be decoded ({error}): the file is '
                               'truncated or corrupt; replace it') from None


def check_label_file(path: str, num_classes: Optional[int], reduce_zero_label: bool,
                     ignore_index: int = 255) -> None:
    """Refuses a label map that ``LoadAnnotations`` would read wrongly (see the module doc);
    values of a map deeper than 8 bits are checked at its bit depth."""
    image = open_label_map(path)
    if image.mode in SINGLE_CHANNEL_8BIT:
        return
    values = np.asarray(image)
    wrapped = np.unique(values[values > 255])  # the uint8 cast would turn 257 into 1
    if wrapped.size:
        if num_classes is None:
            raise SegDataError(f'{path}: label values {wrapped.tolist()[:10]} do not fit the 8 '
                               'bits the label loader keeps')
        raise out_of_range_error(path, wrapped, num_classes, reduce_zero_label, ignore_index)


def check_training_labels(label: np.ndarray, files: str, num_classes: int,
                          reduce_zero_label: bool, ignore_index: int = 255) -> None:
    """Refuses a loaded label map (after ``reduce_zero_label``) with values beyond the classes;
    the message gives the values as stored in the file."""
    bad = np.unique(label[(label >= num_classes) & (label != ignore_index)])
    if bad.size:
        shift = 1 if reduce_zero_label else 0
        raise out_of_range_error(files, bad + shift, num_classes, reduce_zero_label, ignore_index)


def exif_orientation(path: str) -> int:
    """The EXIF orientation tag of an image file (1, the stored layout, when it has none)."""
    try:
        with Image.open(path) as image:
            return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except (OSError, ValueError, TypeError):
        return 1


def size_mismatch_error(files: str, image_path: Optional[str], image_hw: tuple[int, int],
                        label_hw: tuple[int, int]) -> SegDataError:
    """The error for an image and a label map of different sizes; says when the image's EXIF
    orientation (which LoadImageFromFile applies) is the cause."""
    message = (f'{files}: image is {image_hw[1]}x{image_hw[0]} (WxH) but its label map is '
               f'{label_hw[1]}x{label_hw[0]}')
    orientation = exif_orientation(image_path) if image_path else 1
    if orientation in TRANSPOSING_ORIENTATIONS and tuple(image_hw) == tuple(label_hw)[::-1]:
        message += (f'; the image carries EXIF orientation {orientation}, which LoadImageFromFile '
                    'applies (it turns the image by 90 degrees) while the label map follows the '
                    "stored pixels: load images with LoadImageFromFile(color_type="
                    "'color_ignore_orientation') or remove the image's orientation tag")
    return SegDataError(message)


def has_labelled_pixel(path: str, reduce_zero_label: bool, ignore_index: int = 255) -> bool:
    """Whether the label map ``path`` gives any pixel a class (a value that is neither
    ``ignore_index`` nor, under ``reduce_zero_label``, 0)."""
    with Image.open(path) as image:
        values = np.asarray(image)
    unlabelled = [ignore_index] + ([0] if reduce_zero_label else [])
    return bool(np.isin(values, unlabelled, invert=True).any())


def unlabelled_split_problem(where: str, label_paths: Sequence[str], reduce_zero_label: bool,
                             ignore_index: int = 255, shown: int = 3) -> Optional[str]:
    """The problem of a split none of whose label maps labels a pixel (it would train with loss 0
    and evaluate at 100%), naming a few of them; None otherwise. Reads label maps only until the
    first labelled one (the first file, in a sound split); unreadable ones are left to their own
    checks."""
    readable = []
    for path in label_paths:
        try:
            if has_labelled_pixel(path, reduce_zero_label, ignore_index):
                return None
        except (OSError, ValueError):
            continue
        readable.append(path)
    if not readable:
        return None
    values = f'0 (other) or {ignore_index}' if reduce_zero_label else f'{ignore_index}'
    more = f' and {len(readable) - shown} more' if len(readable) > shown else ''
    return (f'{where}: none of its {len(readable)} label maps gives any pixel a class (every value '
            f'is {values}, ignored), e.g. {", ".join(readable[:shown])}{more}; training would see '
            'loss 0 and evaluation 100%: check the label files (and reduce_zero_label)')
