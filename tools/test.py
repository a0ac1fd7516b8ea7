"""Evaluate a checkpoint: prints the config's metrics (mIoU, mAcc, aAcc and the per-class table for
segmentation; ins_mIoU / cls_mIoU for part segmentation).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--out DIR]
        [--tta] [--amp] [--cfg-options key=value ...] [--launcher none|pytorch|slurm] [--debug]

``--tta`` tests with the config's ``tta_pipeline`` and ``tta_model`` (multi-scale + flip for the
ADE20K configs), as mmseg's tools/test.py does. ``--amp`` runs the forward passes under autocast
(float16 on CUDA, bfloat16 on CPU). Sliding-window inference: ``--cfg-options
model.test_cfg.mode=slide`` (the ADE20K configs carry 512x512 windows). An error ends the run with a
one-line ``error: ...`` (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

import mmbixt  # noqa: F401,I001  (first: registers modules; quiet imports)
from mmengine.config import Config

from mmbixt.checkpoint.remote import is_http
from mmbixt.operations.engine import build_runner
from mmbixt.operations.engine.amp import amp_dtype
from mmbixt.operations.engine.work_dir import LAST_CHECKPOINT, named_in_last_checkpoint
from mmbixt.operations.fileio import check_output_path
from mmbixt.operations.cli import (dataset_folders, load_tool_config, parse_tool_args, run_cli,
                                   tool_parser)


class ToolError(Exception):
    """A problem with the command line or the config, reported as one line."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = tool_parser('Test a checkpoint')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--show-dir', help='write prediction overlays into this folder')
    parser.add_argument('--out', help='write the predicted label maps into this folder')
    parser.add_argument('--overwrite', action='store_true',
                        help='write --out / --show-dir into a folder that already holds files')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation: the config's tta_pipeline and tta_model")
    parser.add_argument('--amp', action='store_true',
                        help='inference under autocast: float16 on CUDA, bfloat16 on a CPU with '
                        'native bf16; fp32 (said so) on a CPU without')
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
    return all(e.get('type') in ('IoUMetric', 'mmseg.IoUMetric', 'BiXTIoUMetric')
               for e in evaluators)


def enable_tta(cfg: Config, config_path: str) -> None:
    """Tests with the config's augmentations and their merging model, as mmseg's test tool."""
    missing = [key for key in ('tta_pipeline', 'tta_model') if not cfg.get(key)]
    if missing:
        raise ToolError(f'--tta needs {" and ".join(missing)} in {config_path} (the ADE20K configs '
                        'inherit both; see configs/_base_/datasets/ade20k.py)')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    # SegTTAModel averages every augmentation's full-size seg_logits: no tiled post-processing.
    cfg.model.setdefault('test_cfg', {}).update(max_full_logits=None, keep_seg_logits=True)
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def enable_autocast(cfg: Config) -> None:
    """mmengine's test loop runs each forward under autocast when ``test_cfg.fp16`` is set: the
    device's default half type (float16 on CUDA, bfloat16 on CPU). A CPU without native bf16
    tests in fp32 (``amp_dtype`` says so, with the cost bf16 would have)."""
    if amp_dtype() is None:
        return
    cfg.setdefault('test_cfg', dict(type='TestLoop'))
    cfg.test_cfg['fp16'] = True


def checkpoint_to_test(path: str) -> str:
    """``path``, or the checkpoint a work dir's ``last_checkpoint`` pointer names (a text file
    holding one path); an http(s) address is downloaded by the loader."""
    if is_http(path):
        return path
    if not osp.isfile(path):
        raise ToolError(f'checkpoint {path} does not exist')
    if osp.basename(path) == LAST_CHECKPOINT:
        named = named_in_last_checkpoint(osp.dirname(path) or '.')
        if not named or not osp.isfile(named):
            raise ToolError(f'{path} is the pointer file a training writes (it names its newest '
                            f'checkpoint: {named or "nothing"}), and that file does not exist; '
                            'give a checkpoint (e.g. WORK_DIR/iter_N.pth) instead')
        print(f'{path} names {named}: testing that checkpoint', file=sys.stderr)
        return named
    return path


def build_config(args: argparse.Namespace) -> Config:
    args.checkpoint = checkpoint_to_test(args.checkpoint)
    cfg = load_tool_config(args)
    cfg.load_from = args.checkpoint
    if (args.show_dir or args.out) and not evaluates_label_maps(cfg):
        raise ToolError(f'--show-dir and --out write image label maps, but {args.config} does not '
                        'evaluate images (for point clouds, tools/demo_points.py renders '
                        'predictions)')
    for setting, folder in (('--show-dir', args.show_dir), ('--out', args.out)):
        if folder:
            check_output_path(folder, setting, folder=True, overwrite=args.overwrite,
                              inputs=[args.config, args.checkpoint],
                              data_folders=dataset_folders(cfg))
    if args.show_dir:
        enable_overlays(cfg, osp.abspath(args.show_dir))
    if args.out:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    if args.tta:
        enable_tta(cfg, args.config)
    if args.amp:
        enable_autocast(cfg)
    return cfg


def main(argv=None) -> None:
    args = parse_args(argv)
    build_runner(build_config(args)).test()


if __name__ == '__main__':
    sys.exit(run_cli(main))
