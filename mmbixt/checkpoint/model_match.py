"""A whole model's checkpoint checked against the model it loads into (mmengine's routes:
``tools/test.py``, ``tools/infer.py``, ``load_from``, ``--resume``).

mmengine loads these with ``strict=False`` and only warns, so a checkpoint of another model (a
ResNet, another BiXT width, a bare backbone) would score garbage without an error. Here every
tensor of the file must match a tensor of the model in name and shape, and every tensor of the
model must be in the file; anything else refuses the load with one line naming the file and what
differs, grouped by module (``backbone.core (150), decode_head.conv_seg (2)``).

The drop set is documented and small: a whole-model checkpoint brings nothing the model may drop;
the model's BatchNorm counters (``num_batches_tracked``) may be absent from a file, as mmengine
allows. ``strict=False`` (``--cfg-options load_strict=False`` for the runner tools) loads what
matches and logs every difference instead (for experts).
"""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from typing import Any, Optional

from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader, load_state_dict
from torch import nn

from .reader import CheckpointError
from .weights import compare_state_dicts, describe_by_prefix, policy_problems, remap_released

MMENGINE_REVISE_KEYS = [(r'^module\.', '')]  # mmengine's default: drop the DDP prefix
MAY_BE_MISSING_SUFFIX = 'num_batches_tracked'
OPT_OUT = '--cfg-options load_strict=False loads what matches and logs the rest'


def checkpoint_state_dict(checkpoint: Any, revise_keys: Optional[list] = None) -> dict:
    """The state dict mmengine would load from ``checkpoint`` (its ``state_dict``, else the
    dict itself), with ``revise_keys`` (pattern, replacement) applied to every key."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    metadata = getattr(state, '_metadata', OrderedDict())  # torch's per-module versions
    for pattern, replacement in (MMENGINE_REVISE_KEYS if revise_keys is None else revise_keys):
        state = OrderedDict((re.sub(pattern, replacement, key), value)
                            for key, value in state.items())
    state = OrderedDict(state)
    state._metadata = metadata
    return state


def model_checkpoint_problems(model: nn.Module, state: dict) -> list[str]:
    """What differs between ``state`` and ``model.state_dict()`` (each a sentence; empty when
    every tensor matches)."""
    own = {k: v for k, v in model.state_dict().items() if not k.endswith(MAY_BE_MISSING_SUFFIX)}
    theirs = {k: v for k, v in state.items()
              if not (k.endswith(MAY_BE_MISSING_SUFFIX) and k not in own)}
    report, _ = compare_state_dicts(own, theirs)
    problems = policy_problems(report, theirs, own, describe_keys=describe_by_prefix)
    hint = _bare_module_hint(model, report.unexpected)
    return problems + ([hint] if hint and problems else [])


def _bare_module_hint(model: nn.Module, unexpected: list[str]) -> Optional[str]:
    """Names the submodule whose weights the unexpected keys are (a bare backbone file)."""
    if not unexpected:
        return None
    keys = list(remap_released({k: None for k in unexpected}))
    own = set(model.state_dict())
    for name, _ in model.named_children():
        if sum(f'{name}.{key}' in own for key in keys) * 2 >= len(keys):
            return (f'it holds the weights of a bare {name} (keys without "{name}."): to start '
                    f'from them, train with model.{name}.init_cfg=dict(type=\'Pretrained\', '
                    f'checkpoint=PATH)')
    return None


def check_model_checkpoint(model: nn.Module, state: dict, path: str, strict: bool = True) -> None:
    """Refuses (``strict``) a state dict that does not match ``model``, naming ``path`` and what
    differs; with ``strict=False`` logs the differences instead."""
    problems = model_checkpoint_problems(model, state)
    if problems and strict:
        raise CheckpointError(path, 'does not match the model: ' + '; '.join(problems),
                              'Point at a checkpoint of this config\'s model (' + OPT_OUT + ')')
    for problem in problems:
        print_log(f'{path}: load_strict=False: {problem}', logger='current',
                  level=logging.WARNING)


def load_model_checkpoint(model: nn.Module, path: str, map_location: Any = 'cpu',
                          strict: bool = True) -> dict:
    """Reads ``path`` through mmengine's checkpoint loaders (the safe reader for local and remote
    files), checks it against ``model`` (``check_model_checkpoint``) and loads it. Returns the
    checkpoint (its ``meta`` holds the dataset's classes)."""
    checkpoint = CheckpointLoader.load_checkpoint(path, map_location=map_location)
    state = checkpoint_state_dict(checkpoint)
    check_model_checkpoint(model, state, str(path), strict=strict)
    load_state_dict(model, state, strict=False)
    return checkpoint if isinstance(checkpoint, dict) else {}
