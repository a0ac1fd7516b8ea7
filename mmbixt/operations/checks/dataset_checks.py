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

from ...datasets.checked_files import CheckedSegFiles
from ...datasets.sample_checks import check_sample_files
from ...datasets.seg_files import SegDataError, exif_orientation
from ...datasets.shapenet_part import (SPLITS as SHAPENET_SPLITS, ShapeNetPartDataError,
                                       ShapeNetPartDataset)
from ...datasets.synthetic import MARKER as SYNTHETIC_MARKER

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


def check_seg_sample(index: int) -> Optional[tuple[str, str]]:
    """``('error', message)`` for a sample that fails to load or check, a note for an image that
    EXIF turns without changing its size, else None."""
    info = dict(_dataset.get_data_info(index))
    info.setdefault('num_classes', len(_dataset.metainfo['classes']))  # any BaseSegDataset
    try:
        check_sample_files(info, _dataset.ignore_index)
        _dataset.prepare_data(index)
    except DATA_ERRORS as error:
        return 'error', str(error)
    orientation = exif_orientation(_dataset.get_data_info(index)['img_path'])
    if orientation in (2, 3, 4):
        return 'note', (f'{_dataset.get_data_info(index)["img_path"]}: EXIF orientation '
                        f'{orientation}; it loads turned/mirrored as viewers show it')
    return None


def check_shape(index: int) -> Optional[tuple[str, str]]:
    try:
        _dataset.get_data_info(index)  # reads and checks the shape file
    except DATA_ERRORS as error:
        return 'error', str(error)
    return None


def _run_chunk(indices: Sequence[int]) -> list[tuple[str, str]]:
    return [found for index in indices if (found := _check(index)) is not None]


def check_samples(dataset, check: Callable, workers: int) -> list[tuple[str, str]]:
    """``check`` on every index of ``dataset``, in ``workers`` forked processes."""
    global _dataset, _check
    _dataset, _check = dataset, check
    chunks = [range(start, min(start + CHUNK, len(dataset)))
              for start in range(0, len(dataset), CHUNK)]
    if workers <= 1:
        return [found for chunk in chunks for found in _run_chunk(chunk)]
    with multiprocessing.get_context('fork').Pool(workers) as pool:
        return [found for part in pool.imap(_run_chunk, chunks) for found in part]


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


def config_datasets(path: str, splits: Sequence[str]):
    """``(split, dataset or None, layout problems, sample check)`` for each split of a config."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    cfg = Config.fromfile(path)
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
    if issubclass(dataset_type, ShapeNetPartDataset):
        try:
            return registry.build(dataset_cfg), [], check_shape
        except DATA_ERRORS as error:
            return None, [str(error)], check_shape
    dataset_cfg = dict(dataset_cfg, pipeline=list(CHECK_PIPELINE), serialize_data=False)
    if issubclass(dataset_type, CheckedSegFiles):
        dataset_cfg['collect_layout_problems'] = True
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
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    root = args.data_root
    if osp.isfile(root) and root.endswith('.py'):
        splits = args.splits or CONFIG_SPLITS
        return report(root, 'config', splits, config_datasets(root, splits), args.workers)
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
    """Prints every problem of ``datasets`` (``(split, dataset, problems, check)``) and a summary;
    1 when there is any problem."""
    start = time.monotonic()
    errors = notes = samples = 0
    for split, dataset, problems, check in datasets:
        found = [('error', problem) for problem in problems]
        if dataset is not None:
            found += check_samples(dataset, check, workers)
            samples += len(dataset)
        for kind, message in found:
            print(f'{kind}: {message}', flush=True)
        errors += sum(kind == 'error' for kind, _ in found)
        notes += sum(kind == 'note' for kind, _ in found)
    print(f'{root} ({layout}, splits {", ".join(splits)}): {samples} samples checked in '
          f'{time.monotonic() - start:.0f} s; {errors} problem(s), {notes} note(s)')
    return 1 if errors else 0
