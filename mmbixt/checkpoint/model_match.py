"""The whole-model route of the loading policy (``tools/test.py``, ``tools/infer.py``,
``load_from``, ``--resume``, the ONNX export): a checkpoint of the very model it loads into.

mmengine loads these with ``strict=False`` and only warns, so a checkpoint of another model (a
ResNet, another BiXT width, a bare backbone) would score garbage without an error. Here the file goes
through ``normalise_checkpoint`` and ``apply_state_dict`` with an empty drop set: every tensor of the
file must match a tensor of the model in name and shape and every tensor of the model must be in the
file (BatchNorm counters aside); anything else refuses the load with one line naming the file and
what differs, grouped by module (``backbone.core (150), decode_head.conv_seg (2)``). A file holding
only the weights of one part of the model (a released ImageNet zip, a bare backbone) is named as
such in one sentence, with the setting that uses it. ``strict=False``
(``--cfg-options load_strict=False``) loads what matches and logs every difference instead (for
experts), but refuses a file of which no tensor loads.
"""
from __future__ import annotations

import re
from typing import Any, Optional

from torch import nn

from .loading import (LoadPolicy, LoadReport, PlainCheckpoint, apply_state_dict,
                      describe_by_prefix, normalise_checkpoint)
from .reader import CheckpointError, PathLike
from .weights import stored_name

OPT_OUT = '--cfg-options load_strict=False loads what matches and logs the rest'
WHOLE_MODEL = LoadPolicy(intro='does not match the model: ',
                         fix="Point at a checkpoint of this config's model", opt_out=OPT_OUT,
                         describe_keys=describe_by_prefix)


def part_of_model(model: nn.Module, checkpoint: PlainCheckpoint) -> Optional[str]:
    """The child module whose weights ``checkpoint`` holds without its prefix (a bare backbone,
    a released classifier file), as a sentence saying how to use them; None otherwise."""
    own = model.state_dict()
    keys = [k for k in checkpoint.state_dict if k not in own]
    if not keys or len(keys) * 2 < len(checkpoint.state_dict):
        return None
    for name, _ in model.named_children():
        if sum(f'{name}.{key}' in own for key in keys) * 2 >= len(keys):
            released = stored_name(checkpoint.raw)
            what = (f'the ImageNet weights of {released}, which are {name} weights' if released
                    else f'the weights of a bare {name} (keys without "{name}.")')
            return (f'holds {what}, not a checkpoint of the whole model: to start from them, set '
                    f"model.{name}.init_cfg=dict(type='Pretrained', checkpoint="
                    f"'{checkpoint.path}') and train")
    return None


def revise(checkpoint: PlainCheckpoint, revise_keys: Optional[list]) -> PlainCheckpoint:
    """``checkpoint`` with mmengine's ``revise_keys`` (pattern, replacement) applied to each key."""
    state = checkpoint.state_dict
    for pattern, replacement in revise_keys or ():
        state = {re.sub(pattern, replacement, key): value for key, value in state.items()}
    return PlainCheckpoint(checkpoint.path, state, checkpoint.raw)


HEADS_ENTRY = 'attention_heads'  # meta entry of the checkpoints BiXTRunner writes


def attention_heads(model: nn.Module) -> dict[str, int]:
    """The head count of every module that has one (``num_heads``), by module name: a model of
    other head counts has tensors of the very same shapes, so a checkpoint records them
    (``meta['attention_heads']``, written by ``BiXTRunner``)."""
    return {name: module.num_heads for name, module in model.named_modules()
            if isinstance(getattr(module, 'num_heads', None), int)}


def check_attention_heads(model: nn.Module, checkpoint: PlainCheckpoint) -> None:
    """Refuses a checkpoint that records other head counts than ``model``'s, naming the module;
    a file without the record (released, converted, other tools) is checked by shape alone."""
    meta = checkpoint.raw.get('meta') if isinstance(checkpoint.raw, dict) else None
    stored = meta.get(HEADS_ENTRY) if isinstance(meta, dict) else None
    if not isinstance(stored, dict):
        return
    own = attention_heads(model)
    differ = [name for name in own if name in stored and stored[name] != own[name]]
    if differ:
        raise CheckpointError(
            checkpoint.path, f'was trained with other attention head counts than the model: '
            f'{differ[0]}.num_heads is {stored[differ[0]]} in the file and {own[differ[0]]} in the '
            f'model ({len(differ)} modules differ); the tensors have the same shapes but would '
            'compute something else', "Point at a checkpoint of this config's model, or set the "
            "config's num_heads to the file's")


def apply_whole_model(model: nn.Module, checkpoint: PlainCheckpoint,
                      strict: bool = True) -> LoadReport:
    """``apply_state_dict`` under the whole-model policy; a part's weights are refused in one
    sentence saying how to use them, other head counts naming the module."""
    part = part_of_model(model, checkpoint)
    if part is not None:
        raise CheckpointError(checkpoint.path, part)
    check_attention_heads(model, checkpoint)
    return apply_state_dict(model, checkpoint, WHOLE_MODEL, strict=strict)


def load_model_checkpoint(model: nn.Module, path: PathLike, strict: bool = True) -> dict:
    """Reads ``path`` (local or remote), checks it against ``model`` and loads it
    (``apply_whole_model``). Returns the checkpoint as read (its ``meta`` holds the dataset's
    classes)."""
    checkpoint = normalise_checkpoint(path)
    apply_whole_model(model, checkpoint, strict=strict)
    raw: Any = checkpoint.raw
    return raw if isinstance(raw, dict) else {}
