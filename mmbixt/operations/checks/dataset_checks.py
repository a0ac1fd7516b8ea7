"""The check of a whole dataset (``tools/check_dataset.py``): a config's train, val and test
datasets, or an ADE20K or ShapeNetPart folder, every sample through the datasets' own checks (one
implementation), every problem listed."""
from __future__ import annotations

import argparse
import multiprocessing
import os
import os.path as osp
import time
from typing import Callable, Optional, Sequence

import numpy as np
from mmengine.config import DictAction

from ...datasets.checked_files import CheckedSegFiles, checked_split
from ...datasets.point_parts import PointPartDataset
from ...datasets.sample_checks import check_sample_files
from ...datasets.seg_files import SegDataError, exif_orientation
from ...datasets.shapenet_part import (SPLITS as SHAPENET_SPLITS, ShapeNetPartDataError,
                                       ShapeNetPartDataset)
from ...datasets.synthetic import MARKER as SYNTHETIC_MARKER
from .label_stats import SplitLabels, label_report, split_name

DATA_ERRORS = (SegDataError, ShapeNetPartDataError)
CHUNK = 16  # samples per task handed to a worker
# What runs on every image sample: loading and the checks, no augmentation.
CHECK_PIPELINE = (dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='CheckSegSample'))

# The dataset being checked, set before the worker processes fork (they inherit it).
_dataset = None
_check: Optional[Callable[[int], Optional[tuple[str, str]]]] = None


def guess_format(root: str) -> str:
    if osp.isfile(osp.join(root, 'synsetoffset2category.txt')):
        return 'shapenetpart'
    if osp.isdir(osp.join(root, 'images')):
        return 'ade20k'
    raise SystemExit(f'error: {root} looks like neither ADE20K (images/, annotations/) nor '
                     'ShapeNetPart (synsetoffset2category.txt); pass --format')


def check_seg_sample(index: int) -> tuple[Optional[tuple[str, str]], Optional[np.ndarray]]:
    """``('error', message)`` for a sample that fails to load or check, a note for an image that
    EXIF turns without changing its size, else None; and the counts of its label values."""
    info = dict(_dataset.get_data_info(index))
    info.setdefault('num_classes', len(_dataset.metainfo['classes']))  # any BaseSegDataset
    try:
        values = check_sample_files(info, _dataset.ignore_index)
        _dataset.prepare_data(index)
    except DATA_ERRORS as error:
        return ('error', str(error)), None
    except Exception as error:  # noqa: BLE001  (a loader's own failure: named, the check goes on)
        files = ' / '.join(str(info[key]) for key in ('img_path', 'seg_map_path') if info.get(key))
        return ('error', f'{files}: cannot be loaded ({type(error).__name__}: {error})'), None
    counts = None
    if values is not None and not info.get('label_map'):
        counts = np.bincount(values.ravel().astype(np.int64))
    orientation = exif_orientation(info['img_path'])
    if orientation != 1:
        return ('note', f'{info["img_path"]}: EXIF orientation {orientation}; it loads turned/'
                        'mirrored as viewers show it, while its label map is read as stored: '
                        'check that the label map was drawn on the turned view (else load with '
                        "LoadImageFromFile(color_type='color_ignore_orientation'))"), counts
    return None, counts


def check_shape(index: int) -> tuple[Optional[tuple[str, str]], None]:
    try:
        _dataset.get_data_info(index)  # reads and checks the shape file
    except DATA_ERRORS as error:
        return ('error', str(error)), None
    return None, None


def add_counts(total: Optional[np.ndarray], counts: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if counts is None:
        return total
    if total is None:
        return counts.copy()
    if len(counts) > len(total):
        total, counts = counts.copy(), total
    total[:len(counts)] += counts
    return total


def _run_chunk(indices: Sequence[int]) -> tuple[list[tuple[str, str]], Optional[np.ndarray], int]:
    """The problems of the samples ``indices``, their label value counts and how many label
    maps were counted."""
    found, total, counted = [], None, 0
    for index in indices:
        problem, counts = _check(index)
        if problem is not None:
            found.append(problem)
        total = add_counts(total, counts)
        counted += counts is not None
    return found, total, counted


def check_samples(dataset, check: Callable, workers: int
                  ) -> tuple[list[tuple[str, str]], Optional[np.ndarray], int]:
    """``check`` on every index of ``dataset``, in ``workers`` forked processes: the problems,
    the label value counts, the label maps counted."""
    global _dataset, _check
    _dataset, _check = dataset, check
    chunks = [range(start, min(start + CHUNK, len(dataset)))
              for start in range(0, len(dataset), CHUNK)]
    if workers <= 1:
        parts = [_run_chunk(chunk) for chunk in chunks]
    else:
        with multiprocessing.get_context('fork').Pool(workers) as pool:
            parts = list(pool.imap(_run_chunk, chunks))
    found, total, counted = [], None, 0
    for problems, counts, number in parts:
        found += problems
        total = add_counts(total, counts)
        counted += number
    return found, total, counted


class SplitSamples:
    """The complete samples of an mmseg ``BaseSegDataset`` whose split was checked by
    :func:`~mmbixt.datasets.checked_files.checked_split` (built with ``lazy_init``): each is loaded by
    the dataset's own pipeline."""

    def __init__(self, dataset, samples: list[dict]) -> None:
        self.dataset, self.samples = dataset, samples
        self.metainfo, self.ignore_index = dataset.metainfo, dataset.ignore_index
        self.reduce_zero_label, self.data_prefix = dataset.reduce_zero_label, dataset.data_prefix
        self.ann_file = dataset.ann_file

    def __len__(self) -> int:
        return len(self.samples)

    def get_data_info(self, index: int) -> dict:
        return dict(self.samples[index], sample_idx=index)

    def prepare_data(self, index: int):
        return self.dataset.pipeline(self.get_data_info(index))


def ade20k_datasets(root: str, splits: Sequence[str], dataset_type: str):
    """``(split, dataset or None, layout problems)`` for each split of an ADE20K-style root."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')  # the pipeline's transforms are mmseg's
    for split in splits:
        try:
            dataset = DATASETS.build(dict(
                type=dataset_type, data_root=root, pipeline=list(CHECK_PIPELINE),
                data_prefix=dict(img_path=f'images/{split}', seg_map_path=f'annotations/{split}'),
                collect_layout_problems=True, serialize_data=False))
        except DATA_ERRORS as error:
            yield split, None, [str(error)]
            continue
        yield split, dataset, dataset.layout_problems


def shapenetpart_datasets(root: str, splits: Sequence[str]):
    """``(split, dataset or None, split problems)`` for each split of a ShapeNetPart root."""
    for split in splits:
        try:
            yield split, ShapeNetPartDataset(data_root=root, split=split), []
        except DATA_ERRORS as error:
            yield split, None, [str(error)]


CONFIG_SPLITS = ('train', 'val', 'test')


def config_datasets(path: str, splits: Sequence[str], cfg_options: Optional[dict] = None):
    """``(split, dataset or None, layout problems, sample check)`` for each split of a config
    (with the ``--cfg-options`` overrides)."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from ..engine.config_file import read_config
    cfg = read_config(path)
    cfg.merge_from_dict(cfg_options or {})
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    seen = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if loader is None:
            yield split, None, [f'{path}: has no {split}_dataloader'], None
            continue
        for dataset_cfg in leaf_datasets(loader.dataset.to_dict()):
            if dataset_cfg in seen:  # test_dataloader = val_dataloader
                continue
            seen.append(dataset_cfg)
            yield (split, *build_checked(DATASETS, dataset_cfg))


def leaf_datasets(dataset_cfg: dict) -> list[dict]:
    """The datasets inside mmengine's dataset wrappers (ConcatDataset, RepeatDataset, ...)."""
    if 'datasets' in dataset_cfg:
        return [leaf for inner in dataset_cfg['datasets'] for leaf in leaf_datasets(inner)]
    if 'dataset' in dataset_cfg:
        return leaf_datasets(dataset_cfg['dataset'])
    return [dataset_cfg]


def build_checked(registry, dataset_cfg: dict):
    """``(dataset or None, problems, sample check)``: point datasets as configured, image
    datasets with the loading-only pipeline (and every layout problem listed when they can)."""
    dataset_type = registry.get(dataset_cfg['type'])
    if dataset_type is None:
        return None, [f"dataset type {dataset_cfg['type']!r} is not registered"], check_seg_sample
    if issubclass(dataset_type, (ShapeNetPartDataset, PointPartDataset)):
        try:
            return registry.build(dataset_cfg), [], check_shape
        except DATA_ERRORS as error:
            return None, [str(error)], check_shape
    dataset_cfg = dict(dataset_cfg, pipeline=list(CHECK_PIPELINE), serialize_data=False)
    if issubclass(dataset_type, CheckedSegFiles):
        dataset_cfg['collect_layout_problems'] = True
    else:  # any other mmseg dataset: the same split checks, then its complete samples
        try:
            dataset = registry.build({**dataset_cfg, 'lazy_init': True})
            samples, problems = checked_split(dataset, dataset.load_data_list)
        except DATA_ERRORS as error:
            return None, [str(error)], check_seg_sample
        return SplitSamples(dataset, samples), problems, check_seg_sample
    try:
        dataset = registry.build(dataset_cfg)
    except DATA_ERRORS as error:
        return None, [str(error)], check_seg_sample
    return dataset, getattr(dataset, 'layout_problems', []), check_seg_sample


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='List every bad file of a config\'s data or of '
                                     'a dataset folder')
    parser.add_argument('data_root', metavar='CONFIG_OR_DATA_ROOT',
                        help='a config (.py): its train/val/test datasets; or a dataset folder')
    parser.add_argument('--format', choices=['ade20k', 'shapenetpart'],
                        help='the layout (default: recognised from the folder)')
    parser.add_argument('--splits', nargs='+', help='default: every split of the folder; '
                        'for a config train, val and test')
    parser.add_argument('--dataset-type', help='the registered dataset class for ADE20K-style '
                        'folders (default: BiXTADE20KDataset; SyntheticADE20KDataset for the '
                        'procedural demo data)')
    parser.add_argument('--workers', type=int, default=min(2, os.cpu_count() or 1),
                        help='processes (default: 2)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override settings of a config, e.g. '
                        'train_dataloader.dataset.reduce_zero_label=False')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    root = args.data_root
    if osp.isfile(root) and root.endswith('.py'):
        splits = args.splits or CONFIG_SPLITS
        return report(root, 'config', splits, config_datasets(root, splits, args.cfg_options),
                      args.workers)
    if args.cfg_options:
        raise SystemExit('error: --cfg-options applies to a config; a folder has no settings')
    if not osp.isdir(root):
        raise SystemExit(f'error: {root} is neither a config (.py) nor a folder')
    layout = args.format or guess_format(root)
    if layout == 'ade20k':
        splits = args.splits or sorted(
            name for name in os.listdir(osp.join(root, 'images'))
            if osp.isdir(osp.join(root, 'images', name)))
        dataset_type = args.dataset_type or ('SyntheticADE20KDataset' if osp.isfile(
            osp.join(root, SYNTHETIC_MARKER)) else 'BiXTADE20KDataset')
        datasets, check = ade20k_datasets(root, splits, dataset_type), check_seg_sample
    else:
        splits = args.splits or SHAPENET_SPLITS
        datasets, check = shapenetpart_datasets(root, splits), check_shape
    with_check = ((*found, check) for found in datasets)
    return report(root, layout, splits, with_check, args.workers)


def report(root: str, layout: str, splits: Sequence[str], datasets, workers: int) -> int:
    """Prints every problem of ``datasets`` (``(split, dataset, problems, check)``), each split's
    class shares and warnings, and a summary; 1 when there is any problem."""
    start = time.monotonic()
    errors = notes = warnings = samples = 0
    for split, dataset, problems, check in datasets:
        found = [('error', problem) for problem in problems]
        counts, counted = None, 0
        if dataset is not None:
            checked, counts, counted = check_samples(dataset, check, workers)
            found += checked
            samples += len(dataset)
        for kind, message in found:
            print(f'{kind}: {message}', flush=True)
        errors += sum(kind == 'error' for kind, _ in found)
        notes += sum(kind == 'note' for kind, _ in found)
        if counts is not None:
            stats = SplitLabels(split_name(dataset, split), dataset.metainfo['classes'],
                                bool(dataset.reduce_zero_label), dataset.ignore_index,
                                total=counted)
            stats.merge(np.pad(counts, (0, max(0, len(stats.counts) - len(counts))))[
                :len(stats.counts)], counted)
            line, split_warnings = label_report(stats)
            print(f'labels: {line}')
            for warning in split_warnings:
                print(f'warning: {warning}')
            warnings += len(split_warnings)
    print(f'{root} ({layout}, splits {", ".join(splits)}): {samples} samples checked in '
          f'{time.monotonic() - start:.0f} s; {errors} problem(s), {warnings} warning(s), '
          f'{notes} note(s)')
    return 1 if errors else 0

