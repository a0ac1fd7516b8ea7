"""Point-cloud transforms: sampling, normalisation, augmentation, packing.

Each works on the results dict of ``ShapeNetPartDataset``: ``points [N, C]`` (xyz first, then
normals), ``gt_parts [N]``, ``category``. Per-point arrays listed in ``PER_POINT_KEYS`` follow every
resampling.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import BaseDataElement
from mmseg.registry import TRANSFORMS

PER_POINT_KEYS = ('points', 'gt_parts')


def _rng(results: dict, deterministic: bool) -> np.random.Generator:
    # Evaluation samples the same points every time: seeded by the item's index.
    if deterministic:
        return np.random.default_rng(int(results.get('sample_idx', 0)))
    return np.random.default_rng(np.random.randint(2**31))


@TRANSFORMS.register_module()
class SamplePoints(BaseTransform):
    """Samples ``num_points`` points (default: ``results['num_points']`` set by the dataset).

    A shape with at least that many points is sampled without replacement; a shape with fewer keeps
    every point once and fills up with points drawn with replacement (duplicates), so every item has
    the same size. ``deterministic=True`` (for val/test) seeds the draw with the sample index.
    With no number here nor from the dataset (``num_points=None``) every point stays, in order.
    """

    def __init__(self, num_points: Optional[int] = None, deterministic: bool = False):
        self.num_points = num_points
        self.deterministic = deterministic

    def transform(self, results: dict) -> dict:
        wanted = self.num_points or results.get('num_points')
        have = len(results['points'])
        if wanted is None:  # every point of the shape, unsampled
            results['num_points'] = have
            return results
        rng = _rng(results, self.deterministic)
        if have >= wanted:
            index = rng.choice(have, wanted, replace=False)
        else:
            index = np.concatenate([rng.permutation(have), rng.choice(have, wanted - have)])
        for key in PER_POINT_KEYS:
            if key in results:
                results[key] = results[key][index]
        results['num_points'] = wanted
        return results


@TRANSFORMS.register_module()
class NormalizePoints(BaseTransform):
    """Centres xyz on their mean and scales them into the unit sphere (normals are unchanged)."""

    def transform(self, results: dict) -> dict:
        points = results['points'].copy()
        xyz = points[:, :3] - points[:, :3].mean(axis=0)
        radius = np.linalg.norm(xyz, axis=1).max()
        points[:, :3] = xyz / max(radius, 1e-8)
        results['points'] = points
        return results


@TRANSFORMS.register_module()
class RandomScaleShiftPoints(BaseTransform):
    """Anisotropic random scale in ``scale`` per axis, then a random shift in ``[-shift, shift]``."""

    def __init__(self, scale: tuple[float, float] = (2 / 3, 3 / 2), shift: float = 0.2):
        self.scale = scale
        self.shift = shift

    def transform(self, results: dict) -> dict:
        points = results['points'].copy()
        scale = np.random.uniform(*self.scale, size=3).astype(np.float32)
        points[:, :3] = points[:, :3] * scale + np.random.uniform(-self.shift, self.shift, 3)
        if points.shape[1] >= 6:  # normals of a stretched surface: scale by 1/s, renormalise
            normals = points[:, 3:6] / scale
            points[:, 3:6] = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-8)
        results['points'] = points
        return results


@TRANSFORMS.register_module()
class JitterPoints(BaseTransform):
    """Adds clipped Gaussian noise to xyz."""

    def __init__(self, std: float = 0.01, clip: float = 0.05):
        self.std = std
        self.clip = clip

    def transform(self, results: dict) -> dict:
        points = results['points'].copy()
        noise = np.clip(np.random.normal(0, self.std, (len(points), 3)), -self.clip, self.clip)
        points[:, :3] += noise.astype(np.float32)
        results['points'] = points
        return results


@TRANSFORMS.register_module()
class RandomRotatePoints(BaseTransform):
    """Rotates xyz and normals by a random angle in ``[-max_angle, max_angle]`` (radians) about the
    up axis (y in ShapeNetPart)."""

    def __init__(self, max_angle: float = np.pi, up_axis: int = 1):
        self.max_angle = max_angle
        self.up_axis = up_axis

    def transform(self, results: dict) -> dict:
        angle = np.random.uniform(-self.max_angle, self.max_angle)
        cos, sin = np.cos(angle), np.sin(angle)
        a, b = [axis for axis in range(3) if axis != self.up_axis]
        rotation = np.eye(3, dtype=np.float32)
        rotation[a, a], rotation[a, b], rotation[b, a], rotation[b, b] = cos, -sin, sin, cos
        points = results['points'].copy()
        points[:, :3] = points[:, :3] @ rotation.T
        if points.shape[1] >= 6:
            points[:, 3:6] = points[:, 3:6] @ rotation.T
        results['points'] = points
        return results


@TRANSFORMS.register_module()
class PackPointInputs(BaseTransform):
    """``inputs``: points ``[N, C]`` float tensor; ``data_samples``: a ``BaseDataElement`` with
    ``gt_parts [N]`` and the metainfo ``category``, ``shape_id``, ``points_path``, ``sample_idx``."""

    META_KEYS = ('category', 'shape_id', 'points_path', 'sample_idx')

    def transform(self, results: dict) -> dict:
        sample = BaseDataElement(
            metainfo={k: results[k] for k in self.META_KEYS if k in results})
        if 'gt_parts' in results:
            sample.gt_parts = torch.from_numpy(np.asarray(results['gt_parts'], dtype=np.int64))
        points = torch.from_numpy(np.ascontiguousarray(results['points'], dtype=np.float32))
        return dict(inputs=points, data_samples=sample)
