"""Your own point clouds: your categories, each with its own table of parts.

Layout under ``data_root``: one file per cloud, ``<category>/<name>.txt`` (rows ``x y z part`` or
``x y z nx ny nz part``, whitespace-separated) or ``.npy`` (the same columns), and a split list per
split (``train.txt``: one ``<category>/<name>`` per line). ``part`` is the index of the point's part
in its category's part list (0, 1, ...). The categories and their parts are declared in the config
(``categories=dict(mug=('body', 'handle'), ...)``) or in a small JSON file of the same mapping.
"""
from __future__ import annotations

import json
import os.path as osp
from typing import Mapping, Optional, Sequence, Union

import numpy as np
from mmengine.dataset import BaseDataset
from mmseg.registry import DATASETS, TRANSFORMS

from .point_files import DEFAULT_MAX_POINTS, check_extent, read_cloud_rows
from .shapenet_part import ShapeNetPartDataError, refuse_duplicates

PointDataError = ShapeNetPartDataError  # one error type for every point-cloud file
CLOUD_SUFFIXES = ('.txt', '.npy')


def read_categories(categories: Union[str, Mapping[str, Sequence[str]]]) -> dict[str, tuple]:
    """``{category: (part names)}`` from the config's mapping or a JSON file holding one."""
    source = 'categories'
    if isinstance(categories, str):
        source = categories
        if not osp.isfile(categories):
            raise PointDataError(categories, 'category file not found (a JSON object: '
                                 '{"mug": ["body", "handle"], ...})')
        try:
            with open(categories, encoding='utf-8') as f:
                categories = json.load(f)
        except json.JSONDecodeError as err:
            raise PointDataError(source, f'not valid JSON ({err})') from None
    if not isinstance(categories, Mapping) or not categories or not all(
            isinstance(parts, (list, tuple)) and parts and all(isinstance(p, str) for p in parts)
            for parts in categories.values()):
        raise PointDataError(source, 'should map each category name to its list of part names, '
                             "e.g. dict(mug=('body', 'handle'), table=('top', 'legs'))")
    return {str(name): tuple(parts) for name, parts in categories.items()}


def part_table(categories: Mapping[str, Sequence[str]]) -> tuple[tuple[int, ...], ...]:
    """The global part ids of each category: consecutive, in the declared order."""
    table, start = [], 0
    for parts in categories.values():
        table.append(tuple(range(start, start + len(parts))))
        start += len(parts)
    return tuple(table)


def cloud_layout(use_normals: bool) -> tuple[tuple[int, ...], str]:
    """The column counts a cloud file may have, in numbers and in words."""
    if use_normals:
        return (7,), '7 numbers: x y z nx ny nz part (use_normals=True)'
    return (4, 7), '4 numbers: x y z part (or 7 with normals, which use_normals=False drops)'


@DATASETS.register_module()
class PointPartDataset(BaseDataset):
    """Part segmentation of your own point clouds (see the module doc for the layout).

    Args:
        data_root: the folder holding the category folders and split lists.
        categories: ``{category: (part names)}``, or the path of a JSON file with that mapping.
        split_file: the split list (relative to ``data_root``), e.g. ``'train.txt'``.
        num_points: points per cloud after sampling (training); None keeps every point.
        use_normals: clouds have normals (7 columns), passed to the model as 3 more channels
            (the model's ``in_channels`` 6); False: clouds of 4 columns (or 7, normals dropped)
            and ``in_channels`` 3.
        min_points: refuse a cloud with fewer points (set it to the model's point groups).
        max_points: refuse a cloud with more points (default 500,000; bounds one sample).
        pipeline: the transforms (those of the ShapeNetPart configs).

    Items carry ``points [N, 3 or 6]``, ``gt_parts [N]`` (global part ids: the parts of all
    categories numbered in order), ``category``, ``num_points``; ``metainfo`` has ``classes`` (the
    categories), ``category_parts``, ``num_parts`` and ``part_names``.
    """

    def __init__(self, data_root: str, categories: Union[str, Mapping[str, Sequence[str]]],
                 split_file: str = 'train.txt', num_points: Optional[int] = 2048,
                 use_normals: bool = False, min_points: Optional[int] = None,
                 max_points: Optional[int] = DEFAULT_MAX_POINTS, pipeline: Sequence = (),
                 test_mode: bool = False, **kwargs) -> None:
        if num_points is not None and (not isinstance(num_points, int) or num_points < 1):
            raise ValueError(f'num_points must be a positive int or None (every point), got '
                             f'{num_points!r}')
        table = read_categories(categories if not isinstance(categories, str) or osp.isabs(
            categories) or osp.isfile(categories) else osp.join(data_root, categories))
        self.part_names = table
        self.split_file, self.num_points, self.use_normals = split_file, num_points, use_normals
        self.min_points, self.max_points = min_points, max_points
        category_parts = part_table(table)
        metainfo = dict(classes=tuple(table), category_parts=category_parts,
                        num_parts=sum(len(parts) for parts in category_parts),
                        part_names={part: f'{name}/{label}' for (name, labels), parts in
                                    zip(table.items(), category_parts)
                                    for part, label in zip(parts, labels)})
        pipeline = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]
        super().__init__(data_root=data_root, metainfo=metainfo, pipeline=pipeline,
                         test_mode=test_mode, serialize_data=False, **kwargs)

    def load_data_list(self) -> list[dict]:
        if not osp.isdir(self.data_root):
            raise PointDataError(self.data_root, 'data root not found (set data_root to the folder '
                                 'holding the category folders and split lists)')
        split = osp.join(self.data_root, self.split_file)
        if not osp.isfile(split):
            raise PointDataError(split, 'split list not found (one <category>/<name> per line)')
        with open(split, encoding='utf-8') as f:
            entries = [line.strip() for line in f if line.strip()]
        refuse_duplicates(split, entries)
        names = list(self.metainfo['classes'])
        data_list = []
        for number, entry in enumerate(entries, start=1):
            category = entry.split('/')[0]
            if category not in names or '/' not in entry:
                raise PointDataError(split, f'line {number}: {entry!r} is not <category>/<name> '
                                     f'of a declared category ({", ".join(names)})')
            data_list.append(dict(points_path=self.cloud_path(entry),
                                  category=names.index(category), shape_id=entry))
        if not data_list:
            raise PointDataError(split, 'lists no clouds')
        return data_list

    def cloud_path(self, entry: str) -> str:
        """The file of a split-list entry: ``<entry>.txt`` or ``<entry>.npy`` (or as listed)."""
        base = osp.join(self.data_root, entry)
        for path in [base] * entry.endswith(CLOUD_SUFFIXES) + [base + s for s in CLOUD_SUFFIXES]:
            if osp.isfile(path):
                return path
        return base + CLOUD_SUFFIXES[0]  # reported as not found when read

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        points, parts = read_labelled_cloud(
            info['points_path'], self.metainfo['category_parts'][info['category']],
            self.metainfo['classes'][info['category']], self.use_normals, self.min_points,
            self.max_points)
        info.update(points=points, gt_parts=parts, num_points=self.num_points)
        return info


def read_labelled_cloud(path: str, parts: Sequence[int], category: str, use_normals: bool,
                        min_points: Optional[int] = None,
                        max_points: Optional[int] = DEFAULT_MAX_POINTS
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Points ``[N, 6 or 3]`` (float32) and global part ids ``[N]`` of one labelled cloud; a part
    index outside the category's parts is refused naming the file and row."""
    columns, layout = cloud_layout(use_normals)
    rows = read_cloud_rows(path, columns, layout, PointDataError, min_points, max_points)
    local = rows[:, -1]
    outside = (local < 0) | (local >= len(parts)) | (local != np.round(local))
    if outside.any():
        row = int(np.argmax(outside))
        raise PointDataError(path, f'part {local[row]:g} (row {row + 1}) is not a part of its '
                             f'category {category} (parts 0..{len(parts) - 1})')
    check_extent(path, rows, PointDataError)
    points = rows[:, :6] if use_normals else rows[:, :3]
    return points.astype(np.float32), np.asarray(parts)[local.astype(np.int64)]
