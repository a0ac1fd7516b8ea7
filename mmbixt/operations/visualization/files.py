"""Reading what users pass to the picture tools, and naming what they write: every bad file is
refused with its name before any work, and no two inputs share an output file."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ...datasets.image_files import InputFileError, check_regular_file, read_image  # noqa: F401  (shared)


def read_label_map(path: str, num_classes: int, reduce_zero_label: bool,
                   ignore_index: int = 255) -> np.ndarray:
    """A label map as class indices ``[H, W]`` (int64) with ``ignore_index`` where unlabelled,
    read at its bit depth; under ``reduce_zero_label`` (ADE20K) file value 0 is unlabelled and
    value v is class v - 1. Multi-channel files and values beyond the classes are refused."""
    check_regular_file(path, 'label map')
    try:
        with Image.open(path) as image:
            mode, raw = image.mode, np.asarray(image).astype(np.int64)
    except (OSError, ValueError) as err:
        raise InputFileError(f'{path} is not a readable label map ({type(err).__name__}: '
                             f'{err})') from None
    if raw.ndim != 2:
        raise InputFileError(f'{path} has {raw.shape[2]} channels ({mode}); a label map holds '
                             'one class id per pixel (a grayscale or palette PNG)')
    shift = 1 if reduce_zero_label else 0
    ignored = (raw == ignore_index) | ((raw == 0) if reduce_zero_label else False)
    classes = raw - shift
    bad = np.unique(raw[~ignored & (classes >= num_classes)])  # as stored in the file
    if bad.size:
        raise InputFileError(
            f'{path}: label values {bad.tolist()[:10]} exceed the model\'s {num_classes} classes '
            f'(allowed: {shift}..{num_classes - 1 + shift}'
            + (', 0 = unlabelled)' if shift else f', {ignore_index} = unlabelled)'))
    return np.where(ignored, ignore_index, classes)


def check_same_size(image_path: str, image: np.ndarray, label_path: str,
                    labels: np.ndarray) -> None:
    if image.shape[:2] != labels.shape:
        raise InputFileError(f'{label_path} is {labels.shape[1]}x{labels.shape[0]} (WxH) but its '
                             f'image {image_path} is {image.shape[1]}x{image.shape[0]}')


def label_paths(images: Sequence[str], given: Sequence[str], seg_map_suffix: str = '.png'
                ) -> list[str]:
    """The label map of each image: ``given`` is one file per image (same order) or a single
    folder holding ``<image stem><seg_map_suffix>`` (the config's, e.g. ``_mask.png``) for every
    image."""
    if len(given) == 1 and os.path.isdir(given[0]):
        return [os.path.join(given[0], Path(image).stem + seg_map_suffix) for image in images]
    if len(given) != len(images):
        raise InputFileError(f'--gt: {len(given)} label maps for {len(images)} images; give one '
                             f'per image (same order) or one folder of <image name>'
                             f'{seg_map_suffix} files')
    return list(given)


def figure_paths(images: Sequence[str], out_dir: Path, suffix: str = '_bixt.png'
                 ) -> dict[str, Path]:
    """One output path per distinct input, never shared: the inputs' folders below their common
    folder are kept (``a/x.jpg``, ``b/x.jpg`` -> ``out/a/x_bixt.png``, ``out/b/x_bixt.png``) and
    the extension is kept where two inputs differ only by it (``x.jpg``, ``x.png``)."""
    resolved = {path: Path(path).resolve() for path in images}
    unique = list(dict.fromkeys(resolved.values()))
    root = Path(os.path.commonpath([p.parent for p in unique]))
    stems = {p: p.relative_to(root).with_suffix('') for p in unique}
    shared = {stem for stem, count in Counter(stems.values()).items() if count > 1}
    names = {p: (p.relative_to(root) if stems[p] in shared else stems[p]) for p in unique}
    outputs = {path: out_dir / f'{names[full]}{suffix}' for path, full in resolved.items()}
    for path, output in outputs.items():
        if output.resolve() in unique:
            raise InputFileError(f'{output} would overwrite the input {path}; choose another '
                                 '--out-dir')
    return outputs

