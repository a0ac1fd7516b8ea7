"""Command-line handling shared by ``tools/train.py`` and ``tools/test.py``."""
from __future__ import annotations

import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from ..tools_common import add_debug_arg


def tool_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every runner tool takes: the config, ``--work-dir``,
    ``--cfg-options``, ``--launcher``, the launcher's ``--local-rank`` and ``--debug``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config settings, e.g. train_cfg.max_iters=1000')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_debug_arg(parser)
    return parser


def parse_tool_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_tool_config(args: argparse.Namespace) -> Config:
    """The config with the launcher, the ``--cfg-options`` overrides and the work dir applied."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    cfg.merge_from_dict(args.cfg_options)
    train_from_scratch_if_asked(cfg)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def train_from_scratch_if_asked(cfg: Config) -> None:
    """A config whose top-level ``checkpoint`` is None (as the shipped configs' comment says, also
    in a child config, where the base's model dict was built from the base's value) gets no
    pretrained backbone: ``model.backbone.init_cfg`` of type Pretrained becomes None."""
    backbone = cfg.get('model', {}).get('backbone', {})
    init_cfg = backbone.get('init_cfg')
    if ('checkpoint' in cfg and cfg.checkpoint is None and isinstance(init_cfg, dict)
            and init_cfg.get('type') == 'Pretrained'):
        backbone.init_cfg = None
        print_log('checkpoint = None: the backbone trains from scratch '
                  '(model.backbone.init_cfg=None)', logger='current')
