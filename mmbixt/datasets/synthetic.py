"""A small procedural dataset in the ADE20K layout, for the demo and the tests.

Each scene is a background and a few rectangles and ellipses; every class has its own colour and
texture (so a few hundred iterations suffice to learn it), thin "other" scribbles carry label 0
(ignored under ADE20K's ``reduce_zero_label``), and image sizes are odd on purpose.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import numpy as np
from mmseg.registry import DATASETS
from PIL import Image, ImageDraw

from .ade20k import BiXTADE20KDataset

# name, RGB colour, texture; label value = index + 1 (0 = other).
CLASSES = (('sky', (90, 150, 235), 'gradient'), ('grass', (60, 170, 60), 'noise'),
           ('water', (30, 90, 130), 'stripes'), ('sand', (225, 200, 120), 'dots'),
           ('brick', (170, 60, 40), 'checker'))
SPLITS = ('training', 'validation')
MARKER = 'synthetic.json'


def class_texture(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A ``[H, W]`` brightness offset in about -40..40 that characterises a class."""
    rows, cols = np.mgrid[0:height, 0:width]
    if kind == 'gradient':
        return 40 * rows / max(height - 1, 1) - 20
    if kind == 'noise':
        return rng.normal(0, 18, (height, width))
    if kind == 'stripes':
        return 30 * np.sin(rows * 0.8)
    if kind == 'dots':
        return -45 * ((rows % 6 < 2) & (cols % 6 < 2))
    return 30 * (((rows // 5) + (cols // 5)) % 2) - 15  # checker


def render_scene(rng: np.random.Generator, height: int, width: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One RGB image ``[H, W, 3]`` uint8 and its label map ``[H, W]`` (0 = other, 1..K)."""
    label = Image.new('L', (width, height), int(rng.integers(1, len(CLASSES) + 1)))
    draw = ImageDraw.Draw(label)
    for _ in range(int(rng.integers(2, 5))):
        x0, y0 = rng.integers(0, width - 20), rng.integers(0, height - 20)
        x1 = x0 + rng.integers(20, max(21, width // 2))
        y1 = y0 + rng.integers(20, max(21, height // 2))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape((int(x0), int(y0), int(x1), int(y1)), fill=int(rng.integers(1, len(CLASSES) + 1)))
    points = [tuple(int(v) for v in rng.integers(0, (width, height))) for _ in range(3)]
    draw.line(points, fill=0, width=3)  # "other" pixels
    label = np.asarray(label)
    image = np.full((height, width, 3), 128.0)
    image[label == 0] = rng.integers(0, 256, 3)
    for value, (_, colour, kind) in enumerate(CLASSES, start=1):
        mask = label == value
        if mask.any():
            shade = np.asarray(colour) + rng.normal(0, 8, 3)  # per-scene jitter
            image[mask] = (shade + class_texture(kind, height, width, rng)[..., None])[mask]
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_synthetic_ade20k(root: Union[str, Path], num_train: int = 48, num_val: int = 12,
                          seed: int = 0, min_size: int = 97, max_size: int = 181) -> Path:
    """Writes (or reuses, when ``root`` already holds the same set) ``images/<split>/*.jpg`` and
    ``annotations/<split>/*.png`` under ``root``; returns ``root``."""
    root = Path(root)
    spec = dict(num_train=num_train, num_val=num_val, seed=seed, min_size=min_size,
                max_size=max_size, classes=[name for name, _, _ in CLASSES])
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return root
    rng = np.random.default_rng(seed)
    for split, count in zip(SPLITS, (num_train, num_val)):
        (root / 'images' / split).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            height, width = (int(v) | 1 for v in rng.integers(min_size, max_size, 2))  # odd
            image, label = render_scene(rng, height, width)
            stem = f'synth_{split}_{index:05d}'
            Image.fromarray(image).save(root / 'images' / split / f'{stem}.jpg', quality=95)
            Image.fromarray(label).save(root / 'annotations' / split / f'{stem}.png')
    marker.write_text(json.dumps(spec))
    return root


@DATASETS.register_module()
class SyntheticADE20KDataset(BiXTADE20KDataset):
    """The procedural scenes of :func:`make_synthetic_ade20k`: ADE20K layout and conventions
    (``reduce_zero_label``), with its own classes."""

    METAINFO = dict(classes=tuple(name for name, _, _ in CLASSES),
                    palette=[list(colour) for _, colour, _ in CLASSES])


# The own-data scenes of make_synthetic_own_data: label value = index; 255 marks the borders.
OWN_DATA_CLASSES = ('background', 'circle', 'square', 'triangle')
OWN_DATA_PALETTE = [[40, 40, 40], [220, 60, 60], [60, 160, 220], [240, 200, 40]]


def render_shapes(rng: np.random.Generator, height: int, width: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One photo-like RGB image and its label map: circles, squares and triangles on a textured
    background, each shape's outline 3 pixels of 255 (ignored) as hand-drawn masks have."""
    label = Image.new('L', (width, height), 0)
    draw = ImageDraw.Draw(label)
    outlines = []
    for _ in range(int(rng.integers(1, 4))):
        value = int(rng.integers(1, len(OWN_DATA_CLASSES)))
        side = int(rng.integers(min(height, width) // 5, min(height, width) // 2))
        x0, y0 = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
        box = (x0, y0, x0 + side, y0 + side)
        if value == 1:
            draw.ellipse(box, fill=value)
            outlines.append((draw.ellipse, box))
        elif value == 2:
            draw.rectangle(box, fill=value)
            outlines.append((draw.rectangle, box))
        else:
            corners = [(x0 + side // 2, y0), (x0, y0 + side), (x0 + side, y0 + side)]
            draw.polygon(corners, fill=value)
            outlines.append((draw.polygon, corners))
    for shape, where in outlines:
        shape(where, outline=255, width=3)
    label = np.asarray(label)
    image = rng.normal(0, 12, (height, width, 3)) + np.asarray(OWN_DATA_PALETTE[0])
    for value, colour in enumerate(OWN_DATA_PALETTE[1:], start=1):
        mask = label == value
        image[mask] = (np.asarray(colour) + rng.normal(0, 20, 3))[None] + \
            rng.normal(0, 10, (int(mask.sum()), 3))
    edge = label == 255  # the border pixels of a photo: a blend of the two sides
    image[edge] = 0.5 * image[edge] + 60
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_synthetic_own_data(root: Union[str, Path], counts: Optional[dict] = None, seed: int = 0,
                            min_size: int = 160, max_size: int = 320) -> Path:
    """Writes a dataset laid out as users' own data often is: ``images/<split>/<n>.jpg`` and
    ``mask/<split>/<n>_mask.png`` (4 classes, 255 borders), splits train/val/test (default
    40/10/10 samples, each split drawn from its own random stream: held out); returns ``root``."""
    root = Path(root)
    counts = counts or dict(train=40, val=10, test=10)
    for offset, (split, count) in enumerate(counts.items()):
        rng = np.random.default_rng([seed, offset])
        (root / 'images' / split).mkdir(parents=True, exist_ok=True)
        (root / 'mask' / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            height, width = (int(v) for v in rng.integers(min_size, max_size, 2))
            image, label = render_shapes(rng, height, width)
            Image.fromarray(image).save(root / 'images' / split / f'{index:04d}.jpg', quality=90)
            Image.fromarray(label).save(root / 'mask' / split / f'{index:04d}_mask.png')
    return root
