"""ShapeNetPart (``shapenetcore_partanno_segmentation_benchmark_v0_normal``) for part segmentation.

Layout under ``data_root``::

    synsetoffset2category.txt                       # "Airplane\t02691156" per line
    train_test_split/shuffled_{train,val,test}_file_list.json   # ["shape_data/<synset>/<id>", ...]
    <synset>/<id>.txt                               # rows "x y z nx ny nz part_id"
"""
from __future__ import annotations

import json
import os.path as osp
from typing import NamedTuple, Optional, Sequence

import numpy as np
from mmengine.dataset import BaseDataset
from mmseg.registry import DATASETS, TRANSFORMS

from ..errors import MMBiXTError
from .point_files import DEFAULT_MAX_POINTS, check_extent, read_cloud_rows


class PartCategory(NamedTuple):
    name: str
    synset: str
    parts: tuple[int, ...]


# The standard 16 categories and their 50 global part ids.
SHAPENETPART_CATEGORIES: tuple[PartCategory, ...] = (
    PartCategory('Airplane', '02691156', (0, 1, 2, 3)),
    PartCategory('Bag', '02773838', (4, 5)),
    PartCategory('Cap', '02954340', (6, 7)),
    PartCategory('Car', '02958343', (8, 9, 10, 11)),
    PartCategory('Chair', '03001627', (12, 13, 14, 15)),
    PartCategory('Earphone', '03261776', (16, 17, 18)),
    PartCategory('Guitar', '03467517', (19, 20, 21)),
    PartCategory('Knife', '03624134', (22, 23)),
    PartCategory('Lamp', '03636649', (24, 25, 26, 27)),
    PartCategory('Laptop', '03642806', (28, 29)),
    PartCategory('Motorbike', '03790512', (30, 31, 32, 33, 34, 35)),
    PartCategory('Mug', '03797390', (36, 37)),
    PartCategory('Pistol', '03948459', (38, 39, 40)),
    PartCategory('Rocket', '04099429', (41, 42, 43)),
    PartCategory('Skateboard', '04225987', (44, 45, 46)),
    PartCategory('Table', '04379243', (47, 48, 49)),
)
CATEGORY_NAMES = tuple(c.name for c in SHAPENETPART_CATEGORIES)
CATEGORY_PARTS = tuple(c.parts for c in SHAPENETPART_CATEGORIES)
SYNSET_TO_CATEGORY = {c.synset: i for i, c in enumerate(SHAPENETPART_CATEGORIES)}
NUM_PARTS = 1 + max(max(c.parts) for c in SHAPENETPART_CATEGORIES)  # 50
SPLITS = ('train', 'val', 'test')


class ShapeNetPartDataError(MMBiXTError, ValueError):
    """A problem with a ShapeNetPart file; the message names the file and the problem."""

    def __init__(self, path: str, problem: str):
        super().__init__(f'{path}: {problem}')


def read_category_file(path: str) -> dict[str, str]:
    """``synset -> name`` from ``synsetoffset2category.txt``, checked against the standard table."""
    if not osp.isfile(path):
        raise ShapeNetPartDataError(path, 'category file not found (is data_root the '
                                    'shapenetcore_partanno_segmentation_benchmark_v0_normal folder?)')
    synsets = {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise ShapeNetPartDataError(path, f'line {line_no} should be "<name> <synset>", '
                                            f'got {line.strip()!r}')
            name, synset = fields
            if synset not in SYNSET_TO_CATEGORY:
                raise ShapeNetPartDataError(path, f'line {line_no}: unknown synset {synset} '
                                            f'({name}); not one of the 16 ShapeNetPart categories')
            synsets[synset] = name
    return synsets


def read_split_file(path: str) -> list[tuple[str, str]]:
    """``(synset, shape_id)`` pairs of a ``shuffled_<split>_file_list.json``."""
    if not osp.isfile(path):
        raise ShapeNetPartDataError(path, 'split file not found')
    try:
        with open(path) as f:
            entries = json.load(f)
    except json.JSONDecodeError as err:
        raise ShapeNetPartDataError(path, f'not valid JSON ({err})') from None
    if not isinstance(entries, list):
        raise ShapeNetPartDataError(path, 'should hold a JSON list of "shape_data/<synset>/<id>"')
    pairs = []
    for entry in entries:
        parts = str(entry).split('/')
        if len(parts) < 2:
            raise ShapeNetPartDataError(path, f'entry {entry!r} is not "shape_data/<synset>/<id>"')
        pairs.append((parts[-2], parts[-1]))
    refuse_duplicates(path, [f'{synset}/{shape}' for synset, shape in pairs])
    return pairs


def refuse_duplicates(path: str, entries: Sequence[str]) -> None:
    """Refuses a split list naming a shape twice (it would weigh double in training and in the
    scores), with the positions of the first repeated entry."""
    seen: dict[str, list[int]] = {}
    for number, entry in enumerate(entries, start=1):
        seen.setdefault(entry, []).append(number)
    repeated = [(entry, numbers) for entry, numbers in seen.items() if len(numbers) > 1]
    if repeated:
        entry, numbers = repeated[0]
        more = f' ({len(repeated) - 1} more entries repeat)' if len(repeated) > 1 else ''
        raise ShapeNetPartDataError(
            path, f'{entry} is listed {len(numbers)} times (entries '
            f'{", ".join(map(str, numbers[:5]))}){more}; list each shape once')


def read_points_file(path: str, category: int, min_points: Optional[int] = None,
                     max_points: Optional[int] = DEFAULT_MAX_POINTS
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Points ``[N, 6]`` (xyz, normals; float32) and global part labels ``[N]`` (int64) of one shape.

    Refuses malformed rows, non-finite values, points that all coincide, fewer points than
    ``min_points`` or more than ``max_points``, and part ids outside the shape's category.
    """
    rows = read_cloud_rows(path, (7,), '7 numbers: x y z nx ny nz part_id', ShapeNetPartDataError,
                           min_points, max_points)
    labels = rows[:, 6]
    allowed = CATEGORY_PARTS[category]
    outside = ~np.isin(labels, allowed)
    if outside.any():
        raise ShapeNetPartDataError(
            path, f'part id {labels[outside][0]:g} (row {int(np.argmax(outside)) + 1}) is outside '
            f'its category {CATEGORY_NAMES[category]} (parts {allowed[0]}-{allowed[-1]})')
    check_extent(path, rows, ShapeNetPartDataError)
    return rows[:, :6].astype(np.float32), labels.astype(np.int64)


@DATASETS.register_module()
class ShapeNetPartDataset(BaseDataset):
    """ShapeNetPart shapes with per-point part labels (50 parts over 16 categories).

    Each item starts as ``points [N, 3 or 6]``, ``gt_parts [N]``, ``category`` (index into the 16
    categories), ``num_points`` and ``sample_idx``; the pipeline samples, normalises, augments and
    packs it (``SamplePoints`` takes ``num_points`` from here unless it sets its own).

    Args:
        data_root: the ``shapenetcore_partanno_segmentation_benchmark_v0_normal`` folder.
        split: ``'train'``, ``'val'`` or ``'test'``.
        num_points: points per shape after sampling (2048 is the usual choice for training);
            None keeps every point of every shape, unsampled (the shipped val/test protocol: the
            point segmentor batches shapes of different sizes exactly).
        use_normals: keep the normals as 3 extra channels.
        categories: restrict to these category names (all 16 by default).
        min_points: refuse a shape with fewer points (the point groups of the model, so that a
            cloud kept whole, ``num_points=None``, can be grouped).
        max_points: refuse a shape with more points (default 500,000): bounds one sample's
            memory and time.
        pipeline: the transforms.
    """

    METAINFO = dict(classes=CATEGORY_NAMES, category_parts=CATEGORY_PARTS, num_parts=NUM_PARTS)

    def __init__(self, data_root: str, split: str = 'train', num_points: Optional[int] = 2048,
                 use_normals: bool = True, categories: Optional[Sequence[str]] = None,
                 pipeline: Sequence = (), test_mode: bool = False,
                 min_points: Optional[int] = None,
                 max_points: Optional[int] = DEFAULT_MAX_POINTS, **kwargs):
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
        unknown = set(categories or ()) - set(CATEGORY_NAMES)
        if unknown:
            raise ValueError(f'unknown categories {sorted(unknown)}; choose from {CATEGORY_NAMES}')
        if num_points is not None and (not isinstance(num_points, int) or num_points < 1):
            raise ValueError(f'num_points must be a positive int or None (every point), got '
                             f'{num_points!r}')
        self.split = split
        self.num_points = num_points
        self.use_normals = use_normals
        self.min_points, self.max_points = min_points, max_points
        self.categories = tuple(categories) if categories else CATEGORY_NAMES
        # Built from mmseg's registry so the dataset also works without a default scope.
        pipeline = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]
        super().__init__(data_root=data_root, pipeline=pipeline, test_mode=test_mode,
                         serialize_data=False, **kwargs)

    def load_data_list(self) -> list[dict]:
        category_file = osp.join(self.data_root, 'synsetoffset2category.txt')
        known = read_category_file(category_file)
        split_file = osp.join(self.data_root, 'train_test_split',
                              f'shuffled_{self.split}_file_list.json')
        data_list = []
        for synset, shape_id in read_split_file(split_file):
            if synset not in known:
                raise ShapeNetPartDataError(
                    split_file, f'unknown synset {synset} (entry {synset}/{shape_id}); not listed '
                    f'in {category_file}')
            category = SYNSET_TO_CATEGORY[synset]
            if CATEGORY_NAMES[category] not in self.categories:
                continue
            data_list.append(dict(points_path=osp.join(self.data_root, synset, f'{shape_id}.txt'),
                                  category=category, shape_id=shape_id))
        if not data_list:
            raise ShapeNetPartDataError(
                split_file, 'lists no shapes' if self.categories == CATEGORY_NAMES else
                f'lists no shapes of the categories {", ".join(self.categories)}')
        return data_list

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        points, labels = read_points_file(info['points_path'], info['category'],
                                          self.min_points, self.max_points)
        info.update(points=points if self.use_normals else points[:, :3], gt_parts=labels,
                    num_points=self.num_points)
        return info
