"""Segments the parts of one point cloud with a trained point model, writing the labelled cloud
and a figure.

    python tools/infer_points.py CONFIG CHECKPOINT CLOUD [--category NAME] [--out-dir DIR]
        [--cfg-options key=value ...]

CLOUD is a ``.txt`` (whitespace-separated) or ``.npy`` file of rows ``x y z`` or ``x y z nx ny
nz`` (with ``use_normals``), optionally followed by the true part of each point (its index in the
category's part list, as in the training files), which the figure then compares. ``--category``
names the cloud's category (needed when the config has several; the file's folder name is taken
when it is one of them). Writes ``DIR/<name>_parts.txt`` (the input columns and the predicted part
index of each point; a header names the parts) and ``DIR/<name>_parts.png`` (the cloud from three
viewpoints coloured by part).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

import mmbixt.operations  # noqa: F401,I001  (registers the models and datasets)
import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

from mmbixt.checkpoint.model_match import load_model_checkpoint
from mmbixt.datasets.point_files import DEFAULT_MAX_POINTS, read_cloud_rows
from mmbixt.datasets.point_parts import PointDataError
from mmbixt.operations.cli import run_cli
from mmbixt.operations.engine.config_file import read_config
from mmbixt.operations.fileio import atomic_write, check_output_dir
from mmbixt.operations.visualization import part_segmentation_figure


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Segment the parts of one point cloud')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('cloud', help='.txt or .npy: x y z [nx ny nz] [part]')
    parser.add_argument('--category', help="the cloud's category (one of the config's)")
    parser.add_argument('--out-dir', default='infer_points_output')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    return parser.parse_args(argv)


def dataset_of(cfg):
    """The test dataset's settings and metainfo (categories, their parts, part names)."""
    settings = dict(cfg.test_dataloader.dataset)
    dataset_class = DATASETS.get(settings['type'])
    meta = getattr(dataset_class, 'METAINFO', None)
    if meta is None or 'category_parts' not in meta:  # own clouds: metainfo from the settings
        from mmbixt.datasets.point_parts import part_table, read_categories
        table = read_categories(settings['categories'])
        meta = dict(classes=tuple(table), category_parts=part_table(table),
                    part_names={part: f'{name}/{label}' for (name, labels), parts in
                                zip(table.items(), part_table(table))
                                for part, label in zip(parts, labels)})
    return settings, meta


def choose_category(args, classes) -> int:
    """The cloud's category index: ``--category``, else the file's folder name, else the only one."""
    name = args.category or (osp.basename(osp.dirname(osp.abspath(args.cloud)))
                             if len(classes) > 1 else classes[0])
    if name not in classes:
        raise PointDataError(args.cloud, f'category {name!r} is not one of the config\'s '
                             f'({", ".join(classes)}): pass --category NAME')
    return list(classes).index(name)


def read_cloud(path: str, use_normals: bool, parts) -> tuple[np.ndarray, np.ndarray | None]:
    """Points ``[N, 3 or 6]`` and, when the file has a part column, the true global part ids."""
    width = 6 if use_normals else 3
    rows = read_cloud_rows(path, (width, width + 1) if use_normals else (3, 4, 6, 7),
                           f'x y z{" nx ny nz" if use_normals else " [nx ny nz]"} [part]',
                           PointDataError, None, DEFAULT_MAX_POINTS)
    labelled = rows.shape[1] in (4, 7)
    points = rows[:, :width].astype(np.float32)
    if not labelled:
        return points, None
    local = rows[:, -1].astype(np.int64)
    if local.min() < 0 or local.max() >= len(parts):
        raise PointDataError(path, f'its last column holds parts outside 0..{len(parts) - 1}')
    return points, np.asarray(parts)[local]


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = read_config(args.config)
    cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    check_output_dir(args.out_dir, '--out-dir')
    settings, meta = dataset_of(cfg)
    category = choose_category(args, meta['classes'])
    parts = meta['category_parts'][category]
    points, truth = read_cloud(args.cloud, settings.get('use_normals', True), parts)
    model = MODELS.build(cfg.model)
    load_model_checkpoint(model, args.checkpoint, strict=cfg.get('load_strict', True))
    model.eval()
    pipeline = Compose(settings.get('pipeline') or [])
    sample = pipeline(dict(points=points, category=category, num_points=None,
                           shape_id=osp.basename(args.cloud), points_path=args.cloud,
                           sample_idx=0, **({'gt_parts': truth} if truth is not None else {})))
    with torch.no_grad():
        result = model.test_step(pseudo_collate([sample]))[0]
    predicted = result.pred_parts.numpy()
    local = predicted - parts[0]
    stem = osp.splitext(osp.basename(args.cloud))[0]
    names = [meta.get('part_names', {}).get(part, str(part)).split('/')[-1] for part in parts]
    out = osp.join(args.out_dir, f'{stem}_parts')
    with atomic_write(out + '.txt') as tmp:
        columns = 'x y z nx ny nz' if points.shape[1] == 6 else 'x y z'
        np.savetxt(tmp, np.concatenate([points, local[:, None]], axis=1),
                   fmt=['%.6g'] * points.shape[1] + ['%d'],
                   header=f'{columns} part; parts: ' + ', '.join(
                       f'{i} = {n}' for i, n in enumerate(names)))
    figure = part_segmentation_figure(points[:, :3], truth, predicted, parts,
                                      meta.get('part_names'), title=f'{meta["classes"][category]} '
                                      f'({stem})')
    with atomic_write(out + '.png') as tmp:
        figure.savefig(tmp, format='png')
    counts = ', '.join(f'{n} {int((local == i).sum())}' for i, n in enumerate(names))
    print(f'{args.cloud}: {len(points)} points of {meta["classes"][category]}: {counts}; '
          f'wrote {out}.txt and {out}.png')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
