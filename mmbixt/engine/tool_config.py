"""Command-line handling shared by ``tools/train.py`` and ``tools/test.py``."""
from __future__ import annotations

import argparse
import ast
import os
import os.path as osp
import tempfile
import traceback
from typing import Optional

from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from ..fileio import check_output_dir
from ..tools_common import add_debug_arg


class ConfigFileError(ValueError):
    """A config file that does not parse; the message names the file and the line."""


def syntax_error_in(path: str, seen: Optional[set] = None) -> Optional[str]:
    """Where the config ``path`` or a ``_base_`` file it inherits fails to parse, in words
    (mmengine parses them without their names); None when they all parse."""
    seen = set() if seen is None else seen
    if path in seen or not osp.isfile(path):
        return None
    seen.add(path)
    with open(path, encoding='utf-8') as f:
        source = f.read()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as err:
        return f'config {path}, line {err.lineno}: syntax error: {err.msg}'
    bases = [node.value for node in tree.body if isinstance(node, ast.Assign)
             and any(getattr(t, 'id', None) == '_base_' for t in node.targets)]
    try:
        names = ast.literal_eval(bases[0]) if bases else []
    except ValueError:
        return None
    for name in [names] if isinstance(names, str) else names:
        found = syntax_error_in(osp.join(osp.dirname(path), name), seen)
        if found:
            return f'{found} (inherited by {path})'
    return None


def executed_line(err: BaseException) -> str:
    """`` (line N)`` of the config line that raised ``err`` (mmengine runs a temporary copy of
    the config, line for line), else nothing."""
    frames = [frame for frame in traceback.extract_tb(err.__traceback__)
              if frame.filename.startswith(tempfile.gettempdir())]
    return f' (line {frames[-1].lineno})' if frames else ''


def read_config(path: str) -> Config:
    """``Config.fromfile``, with an error that names the config file: a syntax error with the
    file (itself or one it inherits) and line, a missing file, a failing line."""
    if not osp.isfile(path):
        raise ConfigFileError(f'config {path} does not exist')
    try:
        return Config.fromfile(path)
    except SyntaxError as err:
        raise ConfigFileError(syntax_error_in(path) or f'config {path}: {err}') from None
    except FileNotFoundError as err:
        raise ConfigFileError(f'config {path}: {err.filename or err}, a file it inherits, does '
                              'not exist') from None
    except (NameError, TypeError, ValueError, KeyError, AttributeError, ImportError) as err:
        raise ConfigFileError(f'config {path} (or a file it inherits) fails{executed_line(err)}: '
                              f'{type(err).__name__}: {err}') from None


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
    cfg = read_config(args.config)
    cfg.launcher = args.launcher
    cfg.merge_from_dict(args.cfg_options)
    train_from_scratch_if_asked(cfg)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    check_output_dir(cfg.work_dir, '--work-dir')
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
