"""Train a model from an mmbixt (or any mmseg) config.

    python tools/train.py configs/bixt/upernet_bixt_ti_ade20k.py [--work-dir DIR] [--resume [CKPT]]
        [--overwrite] [--amp] [--cfg-options key=value ...] [--launcher none|pytorch|slurm] [--debug]

An error ends the run with a one-line ``error: ...`` (the traceback is in the log; ``--debug``
shows it).
"""
from __future__ import annotations

import argparse
import sys

import mmbixt  # noqa: F401,I001  (first: registers modules; quiet imports)
from mmengine.config import Config

from mmbixt.operations.engine import build_runner, enable_amp_training
from mmbixt.operations.cli import load_tool_config, parse_tool_args, run_cli, tool_parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = tool_parser('Train a model')
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CKPT',
                        help='resume from CKPT, or from the latest complete checkpoint in the '
                        'work dir')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision training: fp16 with a loss scaler on CUDA, bf16 on '
                        'a CPU with native bf16; fp32 (said so) on a CPU without')
    parser.add_argument('--overwrite', action='store_true', help='start anew in a work dir that '
                        "holds another run's checkpoints (they are moved to superseded_<time>/)")
    return parse_tool_args(parser, argv)


def build_config(args: argparse.Namespace) -> Config:
    cfg = load_tool_config(args)
    if args.amp:
        enable_amp_training(cfg)
    if args.overwrite:
        cfg.overwrite_work_dir = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def main(argv=None) -> None:
    args = parse_args(argv)
    build_runner(build_config(args)).train()


if __name__ == '__main__':
    sys.exit(run_cli(main))
