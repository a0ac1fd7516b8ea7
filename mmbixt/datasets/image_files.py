"""The one image reader of the tools (``tools/infer.py``, ``tools/classify.py``,
``tools/eval_imagenet.py``): every file becomes 8-bit RGB the way ``tools/test.py``'s loader
(mmcv, OpenCV) reads it, and every bad file is refused in one line naming it.

- 16-bit files (grayscale ``I;16`` / ``I`` PNGs) are scaled by their bit depth (``value >> 8``, as
  OpenCV does), not clipped to white as PIL's ``convert('RGB')`` would; 16-bit RGB files PIL
  already reduces the same way.
- a file beyond PIL's decompression-bomb limit is refused naming the file and how to raise the
  limit (environment variable ``MMBIXT_MAX_IMAGE_PIXELS``) when the file is trusted.
- a FIFO, a device or a folder is refused without being opened (it could block the run).
- EXIF orientation is applied (the photo is turned upright), as OpenCV's decoder does for
  ``tools/test.py``'s loader (mmcv ``LoadImageFromFile``, every format that carries EXIF), so a
  photo reads alike on every route.
"""
from __future__ import annotations

import os
import stat

import numpy as np
from PIL import Image, ImageOps

from ..environment import whole_number
from ..errors import MMBiXTError

MAX_PIXELS_VARIABLE = 'MMBIXT_MAX_IMAGE_PIXELS'
SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')
FILE_KINDS = ((stat.S_ISDIR, 'a directory'), (stat.S_ISFIFO, 'a FIFO (named pipe)'),
              (stat.S_ISSOCK, 'a socket'), (stat.S_ISCHR, 'a character device'),
              (stat.S_ISBLK, 'a block device'))


class InputFileError(MMBiXTError, ValueError):
    """A file the tool cannot use; the message names it and says what is wrong."""


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words (``a FIFO (named pipe)``, ...)."""
    return next((name for test, name in FILE_KINDS if test(mode)), 'not a regular file')


def check_regular_file(path: str, what: str) -> None:
    """Refuses anything but an existing regular file (symbolic links followed) without opening
    it, so a FIFO or a device cannot block the run."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise InputFileError(f'{path} is not a readable {what} ({err.strerror})') from None
    if not stat.S_ISREG(mode):
        raise InputFileError(f'{path} is {file_kind(mode)}, not a regular file: give the path of '
                             f'a {what} file')


def not_a_regular_file(path: str) -> str | None:
    """Why ``path`` is no regular file a loader can read (``does not exist``, ``is a FIFO (named
    pipe)``, ``is a symbolic link to X, which does not exist``), or None; nothing is opened."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return f'is a symbolic link to {os.readlink(path)}, which does not exist'
        return 'does not exist'
    except OSError as err:
        return f'cannot be read ({err.strerror})'
    return None if stat.S_ISREG(mode) else f'is {file_kind(mode)}, not a file'


def max_image_pixels() -> int | None:
    """PIL's decompression-bomb limit, raised (0: lifted) by ``MMBIXT_MAX_IMAGE_PIXELS`` (a
    negative or non-numeric value is refused, naming the variable)."""
    given = whole_number(MAX_PIXELS_VARIABLE, minimum=0)
    if given is None:
        return Image.MAX_IMAGE_PIXELS
    return given or None


def to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB; 16-bit grayscale values are divided by 256 (OpenCV's reduction), float images
    in 0..1 are stretched to 0..255."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(values.astype(np.uint8)).convert('RGB')
    if image.mode == 'F':
        values = np.asarray(image, dtype=np.float32)
        scale = 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.nan_to_num(values) * scale, 0, 255).astype(np.uint8)
                               ).convert('RGB')
    return image.convert('RGB')


def open_rgb_image(path: str) -> Image.Image:
    """The image file ``path`` as a decoded 8-bit RGB PIL image."""
    check_regular_file(path, 'image')
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_image_pixels()
    try:
        with Image.open(path) as image:
            return to_rgb8(ImageOps.exif_transpose(image))
    except Image.DecompressionBombError:
        raise InputFileError(
            f'{path} has more pixels than the limit of {Image.MAX_IMAGE_PIXELS} that guards '
            f'against decompression bombs; if you trust the file, raise it, e.g. '
            f'{MAX_PIXELS_VARIABLE}=400000000 (0 lifts it)') from None
    except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise InputFileError(f'{path} is not a readable image ({type(err).__name__}: {err})'
                             ) from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def read_image(path: str) -> np.ndarray:
    """The image as RGB ``uint8`` ``[H, W, 3]`` (grayscale, palette, RGBA and 16-bit files become
    8-bit RGB)."""
    return np.asarray(open_rgb_image(path))
