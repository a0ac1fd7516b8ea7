"""Reading a config file with errors that name it, and the from-scratch switch of a config
(``checkpoint = None``). Used by the tools and by the ONNX export."""
from __future__ import annotations

import ast
import os.path as osp
import tempfile
import traceback
from typing import Optional

from mmengine.config import Config
from mmengine.logging import print_log

from ...errors import MMBiXTError
from ...models.quiet_init import is_pretrained


class ConfigFileError(MMBiXTError, ValueError):
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


def train_from_scratch_if_asked(cfg: Config) -> None:
    """A config whose top-level ``checkpoint`` is None (as the shipped configs' comment says, also
    in a child config, where the base's model dict was built from the base's value) trains from
    scratch: ``model.backbone.init_cfg`` of type Pretrained becomes None, and the fine-tuning
    recipe gives way to a from-scratch one: the config's ``from_scratch`` settings (e.g. its own
    lr and warm-up) are merged in, and layer-wise lr decay (a fine-tuning device that would leave
    the first layers of a random backbone a fraction of the lr) is switched off unless
    ``from_scratch`` sets a ``layer_decay_rate`` itself."""
    if 'checkpoint' not in cfg or cfg.checkpoint is not None:
        return
    backbone = cfg.get('model', {}).get('backbone', {})
    init_cfg = backbone.get('init_cfg')
    if isinstance(init_cfg, dict) and is_pretrained(init_cfg):
        backbone.init_cfg = None
    cfg.merge_from_dict(dict(cfg.get('from_scratch') or {}))
    paramwise_cfg = cfg.get('optim_wrapper', {}).get('paramwise_cfg') or {}
    layer_decay = paramwise_cfg.get('layer_decay_rate', 1.0)
    decay_set = 'layer_decay_rate' in (cfg.get('from_scratch') or {}).get(
        'optim_wrapper', {}).get('paramwise_cfg', {})
    if layer_decay != 1.0 and not decay_set:
        cfg.optim_wrapper.paramwise_cfg.layer_decay_rate = 1.0
    optimizer = cfg.get('optim_wrapper', {}).get('optimizer', {})
    print_log(f'checkpoint = None: the backbone trains from scratch (model.backbone.init_cfg='
              f'None), lr {optimizer.get("lr")}, layer decay '
              f'{cfg.get("optim_wrapper", {}).get("paramwise_cfg", {}).get("layer_decay_rate", 1.0)}'
              + ('' if 'from_scratch' in cfg else '; set from_scratch=dict(optim_wrapper=..., '
                 'param_scheduler=...) in the config for its own lr and warm-up'),
              logger='current')
