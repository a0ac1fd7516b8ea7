"""Evaluate a checkpoint: prints the config's metrics (mIoU, mAcc, aAcc and the per-class table for
segmentation; ins_mIoU / cls_mIoU for part segmentation).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--out DIR]
        [--cfg-options key=value ...] [--launcher none|pytorch|slurm]
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config  # noqa: E402

import mmbixt  # noqa: E402,F401  (registers modules and the safe checkpoint loader)
from mmbixt.engine import build_runner  # noqa: E402
from mmbixt.engine.tool_config import (load_tool_config, parse_tool_args,  # noqa: E402
                                       tool_parser)


def parse_args(argv=None) -> argparse.Namespace:
    parser = tool_parser('Test a checkpoint')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--show-dir', help='write prediction overlays into this folder')
    parser.add_argument('--out', help='write the predicted label maps into this folder')
    return parse_tool_args(parser, argv)


def enable_overlays(cfg: Config, show_dir: str) -> None:
    """Turns on mmseg's visualization hook, writing overlays under ``show_dir``."""
    hooks = cfg.setdefault('default_hooks', {})
    hooks['visualization'] = dict(type='SegVisualizationHook', draw=True, interval=1)
    visualizer = cfg.setdefault('visualizer', dict(type='SegLocalVisualizer', name='visualizer'))
    visualizer['save_dir'] = show_dir
    visualizer.setdefault('vis_backends', [dict(type='LocalVisBackend')])


def evaluates_label_maps(cfg: Config) -> bool:
    """Whether the config evaluates image label maps (mmseg's IoUMetric), which overlays and
    ``--out`` need; the point-cloud metric has no images to draw on."""
    evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
    return all(e.get('type') in ('IoUMetric', 'mmseg.IoUMetric') for e in evaluators)


def build_config(args: argparse.Namespace) -> Config:
    if not osp.isfile(args.checkpoint):
        sys.exit(f'error: checkpoint {args.checkpoint} does not exist')
    cfg = load_tool_config(args)
    cfg.load_from = args.checkpoint
    if (args.show_dir or args.out) and not evaluates_label_maps(cfg):
        sys.exit(f'error: --show-dir and --out write image label maps, but {args.config} does not '
                 'evaluate images (for point clouds, tools/demo_points.py renders predictions)')
    if args.show_dir:
        enable_overlays(cfg, osp.abspath(args.show_dir))
    if args.out:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    return cfg


def main(argv=None) -> None:
    args = parse_args(argv)
    build_runner(build_config(args)).test()


if __name__ == '__main__':
    main()
