"""The two steps every loading route takes: ``normalise_checkpoint`` turns any supported file into a
plain state dict, ``apply_state_dict`` applies it to a model under the one loading policy.

Routes: a backbone's ``init_cfg`` (``Pretrained``), the whole-model loads (``tools/test.py``,
``tools/infer.py``, ``load_from``, ``--resume``), the ONNX export, the timm classifier routes and
the benchmark. Each route differs only in its documented drop set and "stays new" set.

The policy (``apply_state_dict``): every tensor of the file loads, or is in the route's drop set;
every tensor of the model loads, or is in its "stays new" set; anything else refuses the load
naming the file and the tensors. BatchNorm counters (``num_batches_tracked``) may be absent from a
file and are dropped when the model has none (mmengine's behaviour): that is the one default every
route shares. A drop or a new tensor outside the route's documented defaults (a classifier's new
head for another number of classes) is logged at WARNING through mmengine's logger, so it reaches
the console. ``strict=False`` (for experts) loads what matches and logs the rest, but a load that
would leave every tensor of the model untouched is refused: it would run a random model.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from .reader import EMA_ENTRY, WEIGHT_ENTRIES, CheckpointError, PathLike

WRAPPER_PREFIXES = ('module.', '_orig_mod.')
BN_COUNTER_SUFFIX = 'num_batches_tracked'
_BLOCK = re.compile(r'^(?:.*\.)?core\.blocks\.(\d+)\.')


def strip_wrappers(key: str) -> str:
    """Drops the DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes, wherever nested."""
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split('.', 1)[1]
    return key.replace('._orig_mod.', '.')


def to_core_layout(key: str) -> str:
    """The one remap from the released (timm) layout to the mmbixt one: the core's latents and
    layers move under ``core.``; tokenizer, encoding and classifier keys keep their names."""
    if key == 'latents' or key.startswith('blocks.'):
        return 'core.' + key
    return key


@dataclass
class PlainCheckpoint:
    """A checkpoint brought to one form: its tensors in the mmbixt layout (``state_dict``), the
    name it is reported by (``path``) and the whole object read (``raw``: ``meta``, ``optimizer``,
    the released ``arch`` and ``args``)."""
    path: str
    state_dict: dict[str, Tensor]
    raw: Any


def normalise_checkpoint(source: PathLike | Mapping, *, use_ema: bool = False,
                         shown_as: Optional[str] = None) -> PlainCheckpoint:
    """Any supported checkpoint as a plain state dict in the mmbixt layout.

    ``source`` is a path (local, ``~``, or a remote address mmengine's loaders know: http(s),
    s3) read safely, or an object already read (a timm state dict). Its weights are taken from
    ``state_dict_ema`` (``use_ema``), ``state_dict`` or ``model``, else it is a bare state dict;
    the DDP and torch.compile prefixes are stripped and the released layout remapped.
    """
    shown = shown_as or (str(source) if not isinstance(source, Mapping) else 'the state dict')
    raw = source if isinstance(source, Mapping) else read_any(source)
    weights = _weight_entry(raw, shown, use_ema)
    state = {to_core_layout(strip_wrappers(str(k))): v for k, v in weights.items()
             if isinstance(v, Tensor)}
    if not state:
        raise CheckpointError(shown, 'holds no tensors', 'Point at a checkpoint of weights')
    return PlainCheckpoint(shown, state, raw)


def read_any(path: PathLike) -> Any:
    """A local or remote checkpoint, read safely (``sources.read_from``)."""
    from .sources import read_from
    return read_from(path, map_location='cpu')


def _weight_entry(raw: Any, shown: str, use_ema: bool) -> Mapping:
    if not isinstance(raw, Mapping):
        raise CheckpointError(shown, f'holds a {type(raw).__name__}, not a checkpoint dict',
                              'Point at a checkpoint file')
    if use_ema:
        if not isinstance(raw.get(EMA_ENTRY), Mapping):
            raise CheckpointError(shown, f'has no EMA weights ({EMA_ENTRY})',
                                  'Set use_ema=False to load the regular weights')
        return raw[EMA_ENTRY]
    for entry in WEIGHT_ENTRIES:
        if isinstance(raw.get(entry), Mapping):
            return raw[entry]
    if raw and all(isinstance(v, Tensor) for v in raw.values()):
        return raw
    raise CheckpointError(shown, f'has no weights (top-level keys: {sorted(map(str, raw))[:8]})',
                          'Point at a checkpoint of weights')


# ---------------------------------------------------------------- applying
@dataclass
class LoadReport:
    """What a load did: counts for the summary line, names for tests and logs. ``unexpected``,
    ``missing`` and ``mismatched`` are only ever filled by a ``strict=False`` load (a strict one
    refuses instead)."""
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    other_kind: list[str] = field(default_factory=list)

    def summary(self, path: str, name: Optional[str] = None) -> str:
        what = f' ({name})' if name else ''
        line = (f'Loaded {len(self.loaded)} tensors from {path}{what}; dropped '
                f'{len(self.dropped)}: {describe(self.dropped)}; left new {len(self.new)}: '
                f'{describe(self.new)}')
        for label, keys in (('ignored (not in the model)', self.unexpected),
                            ('missing from the file', self.missing),
                            ('ignored (other shape)', self.mismatched),
                            ('ignored (other kind of number)', self.other_kind)):
            if keys:
                line += f'; strict=False: {label} {len(keys)}: {describe(keys)}'
        return line


def describe(keys: Iterable[str]) -> str:
    """A short human summary of key names: grouped by layer or top-level module."""
    def group(key: str) -> str:
        block = _BLOCK.match(key)
        return f'layer {block.group(1)}' if block else key.rsplit('.', 1)[0] if '.' in key else key
    return ', '.join(_groups(keys, group)) or 'nothing'


def describe_by_prefix(keys: Iterable[str], depth: int = 2, most: int = 6) -> str:
    """Key names grouped by their first ``depth`` module names (fewer when that gives more than
    ``most`` groups), with counts: ``backbone.core (150), decode_head.conv_seg (2)`` for whole
    models."""
    keys = list(keys)
    for level in range(depth, 0, -1):
        groups = _groups(keys, lambda key: '.'.join(key.split('.')[:-1][:level]) or key)
        if len(groups) <= most:
            break
    shown = ', '.join(f'{name} ({count})' for name, count in list(groups.items())[:most])
    return shown + (f' and {len(groups) - most} more' if len(groups) > most else '')


def _groups(keys: Iterable[str], group_of) -> dict[str, int]:
    """Groups in natural key order, with how many keys each holds."""
    groups: dict[str, int] = {}
    for key in sorted(keys, key=_natural):
        name = group_of(key)
        groups[name] = groups.get(name, 0) + 1
    return groups


def _natural(key: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', key)]


def _some(keys: list[str], count: int = 3) -> str:
    return ', '.join(keys[:count]) + (', ...' if len(keys) > count else '')


def compare_state_dicts(own: Mapping, theirs: Mapping, *, drop: Iterable[str] = (),
                        may_stay_new: Iterable[str] = ()) -> tuple[LoadReport, dict[str, Tensor]]:
    """Sorts a file's tensors against a model's ``state_dict()`` ``own``: dropped (under a
    ``drop`` prefix, or a BatchNorm counter the model lacks), unexpected, of another shape, or to
    load; and the model's tensors the file lacks: ``new`` under a ``may_stay_new`` prefix or when
    a BatchNorm counter, else ``missing``. Returns the report and the tensors to load."""
    drop, may_stay_new = tuple(drop), tuple(may_stay_new)
    report = LoadReport()
    to_load: dict[str, Tensor] = {}
    for key, value in theirs.items():
        if key.startswith(drop) or (key.endswith(BN_COUNTER_SUFFIX) and key not in own):
            report.dropped.append(key)
        elif key not in own:
            report.unexpected.append(key)
        elif not isinstance(value, Tensor) or own[key].shape != value.shape:
            report.mismatched.append(key)
        elif number_kind(value) != number_kind(own[key]):
            report.other_kind.append(key)
        else:
            to_load[key] = value
    mismatched = set(report.mismatched) | set(report.other_kind)
    absent = [k for k in own if k not in to_load and k not in mismatched]
    report.missing = [k for k in absent
                      if not (k.startswith(may_stay_new) or k.endswith(BN_COUNTER_SUFFIX))]
    report.new = [k for k in absent if k not in report.missing]
    report.loaded = sorted(to_load, key=_natural)
    return report, to_load


def number_kind(tensor: Tensor) -> str:
    """What kind of number a tensor holds: float, complex, integer or bool. ``load_state_dict``
    casts between kinds silently (an int64 tensor into a float weight); within a kind (float16 or
    float32) a cast keeps the values."""
    if tensor.is_floating_point():
        return 'float'
    if tensor.is_complex():
        return 'complex'
    return 'bool' if tensor.dtype == torch.bool else 'integer'


def policy_problems(report: LoadReport, theirs: Mapping, own: Mapping,
                    describe_keys=describe) -> list[str]:
    """The loading policy's refusals of ``report`` as sentences: tensors of another shape (one
    example, the latents when they differ), unexpected and missing ones (``describe_keys``)."""
    problems = []
    if report.mismatched:
        # Name the latents when they differ: their shape says width and count at a glance.
        latents = [k for k in report.mismatched if k.endswith('core.latents')]
        example = (latents or report.mismatched)[0]
        shape = getattr(theirs[example], 'shape', type(theirs[example]).__name__)
        problems.append(
            f'has {len(report.mismatched)} tensors of another shape than the model, e.g. {example} '
            f'{tuple(shape)} where the model has {tuple(own[example].shape)}')
    if report.other_kind:
        example = report.other_kind[0]
        problems.append(
            f'has {len(report.other_kind)} tensors of another kind of number than the model, e.g. '
            f'{example} {str(theirs[example].dtype).replace("torch.", "")} where the model has '
            f'{str(own[example].dtype).replace("torch.", "")}')
    if report.unexpected:
        problems.append(f'has {len(report.unexpected)} tensors the model does not have and does '
                        f'not drop: {describe_keys(report.unexpected)} '
                        f'({_some(report.unexpected)})')
    if report.missing:
        problems.append(f'lacks {len(report.missing)} tensors the model needs: '
                        f'{describe_keys(report.missing)} ({_some(report.missing)})')
    return problems


@dataclass(frozen=True)
class LoadPolicy:
    """A route's documented sets: file tensors it drops, model tensors that may stay new, and,
    of those, the ones that are the route's default (logged at INFO; any other drop or new
    tensor is logged at WARNING). ``intro``, ``fix`` and ``opt_out`` frame a refusal's message;
    ``describe_keys`` groups key names in it."""
    drop: tuple[str, ...] = ()
    may_stay_new: tuple[str, ...] = ()
    defaults: tuple[str, ...] = ()
    fix: str = 'Point at a checkpoint of this model'
    intro: str = ''
    opt_out: str = 'strict=False loads what matches and logs the rest'
    describe_keys: Any = describe


def apply_state_dict(model: nn.Module, checkpoint: PlainCheckpoint,
                     policy: LoadPolicy = LoadPolicy(), *, strict: bool = True,
                     name: Optional[str] = None) -> LoadReport:
    """Loads ``checkpoint`` into ``model`` under ``policy`` (see the module) and returns the report.

    Refuses (CheckpointError naming the file) a tensor that is neither loaded nor in the policy's
    sets; with ``strict=False`` loads what matches and logs the rest at WARNING, but still refuses
    a load of no tensor at all. Logs the summary line, and at WARNING each drop or new tensor
    outside the policy's defaults.
    """
    own = model.state_dict()
    theirs = checkpoint.state_dict
    report, to_load = compare_state_dicts(own, theirs, drop=policy.drop,
                                          may_stay_new=policy.may_stay_new)
    problems = policy_problems(report, theirs, own, policy.describe_keys)
    if problems and strict:
        raise CheckpointError(checkpoint.path, policy.intro + '; '.join(problems),
                              f'{policy.fix} ({policy.opt_out})')
    if not to_load:
        raise CheckpointError(checkpoint.path, 'has no tensor the model can load (0 of '
                              f'{len(own)} would load): using it would run a randomly initialised '
                              'model', policy.fix)
    for problem in problems:
        _warn(f'{checkpoint.path}: strict=False: {problem}')
    model.load_state_dict(to_load, strict=False)
    _log_outside_defaults(report, checkpoint.path, policy.defaults)
    print_log(report.summary(checkpoint.path, name), logger='current')
    return report


def _log_outside_defaults(report: LoadReport, path: str, defaults: tuple[str, ...]) -> None:
    def outside(keys: list[str]) -> list[str]:
        return [k for k in keys if not (k.startswith(defaults) or k.endswith(BN_COUNTER_SUFFIX))]
    for what, keys in (('dropped from the file', outside(report.dropped)),
                       ('left newly initialised in the model', outside(report.new))):
        if keys:
            _warn(f'{path}: {len(keys)} tensors {what}: {describe(keys)} ({_some(keys)})')


def _warn(message: str) -> None:
    print_log(message, logger='current', level=logging.WARNING)
