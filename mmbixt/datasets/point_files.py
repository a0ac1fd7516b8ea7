"""Reading one point-cloud file with its per-point part labels, for ShapeNetPart and for your own
clouds: rows ``x y z [nx ny nz] part``; every problem is refused naming the file."""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np

DEFAULT_MAX_POINTS = 500_000  # points per cloud: bounds the memory and time of one sample


def count_rows(path: str) -> int:
    """Rows of a text cloud (lines with content) or of an ``.npy`` array, without loading it."""
    if path.endswith('.npy'):
        return int(np.load(path, mmap_mode='r').shape[0])
    count = 0
    with open(path, 'rb') as f:
        for line in f:
            count += bool(line.strip())
    return count


def check_point_count(path: str, count: int, min_points: Optional[int],
                      max_points: Optional[int], error: Callable[[str, str], Exception]) -> None:
    """Refuses a cloud with fewer points than ``min_points`` (the model's groups) or more than
    ``max_points`` (the cap on one sample's memory)."""
    if max_points and count > max_points:
        raise error(path, f'has {count} points, above max_points={max_points} (the cap that '
                          'bounds the memory and time of one cloud): downsample the cloud, or '
                          "raise the dataset's max_points")
    if min_points and count < min_points:
        raise error(path, f'has {count} points, fewer than the {min_points} point groups the '
                          "model forms (the dataset's min_points, model.backbone.tokenizer."
                          'num_groups): fill the cloud up or drop the file')


def read_cloud_rows(path: str, columns: Sequence[int], layout: str,
                    error: Callable[[str, str], Exception], min_points: Optional[int] = None,
                    max_points: Optional[int] = DEFAULT_MAX_POINTS) -> np.ndarray:
    """The rows ``[N, C]`` (float64) of a ``.txt`` (whitespace-separated) or ``.npy`` cloud, with
    ``C`` one of ``columns``; refuses a missing file, malformed rows, another column count,
    NaN/inf values, too few or too many points."""
    if not os.path.isfile(path):
        raise error(path, 'shape file not found')
    check_point_count(path, count_rows(path), min_points, max_points, error)
    try:
        rows = (np.load(path, allow_pickle=False).astype(np.float64) if path.endswith('.npy')
                else np.loadtxt(path, dtype=np.float64, ndmin=2))
    except ValueError as err:
        raise error(path, f'malformed row ({err}); expected {layout} per row') from None
    if rows.size == 0:
        raise error(path, 'has no points')
    if rows.ndim != 2 or rows.shape[1] not in columns:
        raise error(path, f'rows have {rows.shape[-1]} columns; expected {layout}')
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        raise error(path, f'{bad.sum()} rows hold NaN or inf values (first at row '
                          f'{int(np.argmax(bad)) + 1})')
    return rows


def check_extent(path: str, rows: np.ndarray, error: Callable[[str, str], Exception]) -> None:
    """Refuses a cloud whose points all coincide (nothing to learn, no normalisation)."""
    if np.ptp(rows[:, :3], axis=0).max() == 0:
        x, y, z = rows[0, :3]
        raise error(path, f'all {len(rows)} points lie at one position ({x:g}, {y:g}, {z:g}): '
                          'the shape has no extent to learn from (and cannot be normalised); fix '
                          'or drop the file')
