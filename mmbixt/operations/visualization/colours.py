"""Colours and pixel blending shared by the figures."""
from __future__ import annotations

import colorsys

import numpy as np
from matplotlib import colormaps


def distinct_colours(count: int) -> np.ndarray:
    """``[count, 3]`` uint8 colours that tell neighbours apart: matplotlib's tab10/tab20 while they
    suffice, then hues spaced by the golden angle with alternating lightness."""
    if count <= 10:
        table = colormaps['tab10'].colors
    elif count <= 20:
        table = colormaps['tab20'].colors
    else:
        table = [colorsys.hls_to_rgb((i * 0.618034) % 1.0, 0.45 + 0.15 * (i % 3 - 1), 0.75)
                 for i in range(count)]
    return (np.asarray(table[:count]) * 255).round().astype(np.uint8)


def greyed(image: np.ndarray, low: float = 0.3, high: float = 0.85) -> np.ndarray:
    """The image's luminance mapped to ``[low, high]`` as float RGB ``[H, W, 3]`` in 0..1: a quiet
    background for colour drawn on top."""
    luminance = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255
    return np.repeat((low + (high - low) * luminance)[..., None], 3, axis=-1)


def blend(background: np.ndarray, colours: np.ndarray, opacity) -> np.ndarray:
    """``background * (1 - opacity) + colours * opacity`` in 0..1 floats (``opacity`` a number or
    an ``[H, W]`` map); uint8 inputs are scaled first."""
    background, colours = (as_unit(a) for a in (background, colours))
    opacity = np.asarray(opacity, np.float32)
    if opacity.ndim == 2:
        opacity = opacity[..., None]
    return background * (1 - opacity) + colours * opacity


def as_unit(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) / 255 if array.dtype == np.uint8 else array.astype(np.float32)
