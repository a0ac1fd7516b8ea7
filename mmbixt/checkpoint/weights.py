"""BiXT weights from any source, in one layout, checked against the model that receives them.

Sources: released classifier checkpoints (timm layout, ``latents`` / ``blocks.i``), files written by
``tools/convert_checkpoint.py``, and mmseg training checkpoints (``backbone.`` prefix). All are brought
to the layout of the mmbixt models, whose core lives under ``core.`` (``core.latents``,
``core.blocks.i``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch
from torch import Tensor, nn

from ..archs import canonical_name, variant_of_name
from .reader import CheckpointError, PathLike, read_checkpoint

WRAPPER_PREFIXES = ('module.', '_orig_mod.')
CLASSIFIER_ONLY = ('fc_norm.', 'head.', 'norm_lat.')
FIXED_POS_BUFFER = 'fourier_pos_encode.pos'
_BIDIRECTIONAL = re.compile(r'^core\.blocks\.(\d+)\.cross_attention_latents_token\.attn\.rv_latents\.weight$')
_ONE_SIDED = re.compile(r'^core\.blocks\.(\d+)\.cross_attention_latents_token\.attn\.r_latents\.weight$')
_BLOCK = re.compile(r'^core\.blocks\.(\d+)\.')


def strip_wrappers(key: str) -> str:
    """Drops the DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes, wherever nested."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key.replace('._orig_mod.', '.')


def to_core_layout(key: str) -> str:
    if key == 'latents' or key.startswith('blocks.'):
        return 'core.' + key
    return key


def _pick_state_dict(ckpt: object, path: PathLike, use_ema: bool) -> dict:
    if not isinstance(ckpt, dict):
        raise CheckpointError(path, f'holds a {type(ckpt).__name__}, not a checkpoint dict',
                              'Point at a BiXT checkpoint')
    key = 'state_dict_ema' if use_ema else 'state_dict'
    if use_ema and key not in ckpt:
        raise CheckpointError(path, 'has no EMA weights (state_dict_ema)',
                              'Set use_ema=False to load the regular weights')
    for candidate in (key, 'model', 'state_dict'):
        if isinstance(ckpt.get(candidate), dict):
            return ckpt[candidate]
    if ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
        return ckpt
    raise CheckpointError(path, f'has no weights (top-level keys: {sorted(ckpt)[:8]})',
                          'Point at a BiXT checkpoint')


def _stored_name(ckpt: dict) -> Optional[str]:
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    args = ckpt.get('args')
    for name in (ckpt.get('arch'), meta.get('bixt_arch'), getattr(args, 'model', None)):
        if isinstance(name, str) and name:
            return canonical_name(name)
    return None


@dataclass
class BiXTWeights:
    """The weights of one checkpoint file in the mmbixt layout."""
    path: str
    state_dict: dict[str, Tensor]
    model_name: Optional[str] = None

    @classmethod
    def from_file(cls, path: PathLike, use_ema: bool = False) -> 'BiXTWeights':
        ckpt = read_checkpoint(path)
        raw = _pick_state_dict(ckpt, path, use_ema)
        state = {strip_wrappers(k): v for k, v in raw.items() if isinstance(v, Tensor)}
        if any(k.startswith('backbone.') for k in state):  # an mmseg segmentor checkpoint
            state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
        state = {to_core_layout(k): v for k, v in state.items()}
        weights = cls(str(path), state, _stored_name(ckpt))
        if 'core.latents' not in state or not weights.bidirectional_layers:
            sample = ', '.join(sorted(state)[:4]) or 'none'
            raise CheckpointError(
                path, f'is not a BiXT checkpoint (no latents and no bi-directional layers; '
                f'keys start with: {sample})',
                'Point at a BiXT checkpoint from the weights table, or a file written by mmbixt')
        return weights

    @property
    def bidirectional_layers(self) -> int:
        """Bi-directional layers, counted as the consecutive run from layer 0."""
        found = {int(m.group(1)) for k in self.state_dict if (m := _BIDIRECTIONAL.match(k))}
        count = 0
        while count in found:
            count += 1
        return count

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """The tensors a dense backbone uses: no classifier head, no one-sided last layer, no
        fixed positional buffer."""
        layers = self.bidirectional_layers

        def used(key: str) -> bool:
            block = _BLOCK.match(key)
            return not key.startswith(CLASSIFIER_ONLY + (FIXED_POS_BUFFER,)) and (
                block is None or int(block.group(1)) < layers)
        return {k: v for k, v in self.state_dict.items() if used(k)}

    @property
    def has_one_sided_layer(self) -> bool:
        return any(_ONE_SIDED.match(k) for k in self.state_dict)

    def check_variant(self, tokenizer: str, stride: int, arch_hint: str) -> None:
        """Refuses a checkpoint whose stored model name says another tokeniser or stride (p16,
        p16s8 and p16s4 share every tensor shape, so only the name tells them apart)."""
        if self.model_name is None:
            return
        variant = variant_of_name(self.model_name)
        if variant is not None and variant != (tokenizer, stride):
            kind, its_stride = variant
            raise CheckpointError(
                self.path, f'holds {self.model_name} ({kind} tokenizer, token stride '
                f'{its_stride}), but the model was built as {arch_hint} ({tokenizer} tokenizer, '
                f'token stride {stride})',
                f'Set arch to match the file (arch={self.model_name!r} for a released one), or '
                'point at the checkpoint of this variant')

    def check_layers(self, needed: int, arch_hint: str) -> None:
        have = self.bidirectional_layers
        if have < needed:
            extra = (' It looks like a d12 classifier, whose last layer is one-sided; the dense '
                     'backbones are the d13 checkpoints' if self.has_one_sided_layer else '')
            raise CheckpointError(
                self.path, f'has {have} bi-directional layers, but {arch_hint} runs {needed}.'
                + extra, f'Use a checkpoint with at least {needed} bi-directional layers, or set '
                f'num_layers to {have} or fewer')


@dataclass
class LoadReport:
    """What a load did: counts for the summary line, names for tests and logs."""
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)

    def summary(self, path: str, name: Optional[str]) -> str:
        what = f' ({name})' if name else ''
        return (f'Loaded {len(self.loaded)} tensors from {path}{what}; dropped '
                f'{len(self.dropped)}: {describe(self.dropped)}; left new {len(self.new)}: '
                f'{describe(self.new)}')


def describe(keys: Iterable[str]) -> str:
    """A short human summary of key names: grouped by layer or top-level module."""
    groups: list[str] = []
    for key in sorted(keys, key=_natural):
        block = _BLOCK.match(key)
        group = f'layer {block.group(1)}' if block else key.rsplit('.', 1)[0] if '.' in key else key
        if group not in groups:
            groups.append(group)
    return ', '.join(groups) if groups else 'nothing'


def _natural(key: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', key)]


def load_weights(model: nn.Module, weights: BiXTWeights, *, drop: Iterable[str] = (),
                 may_stay_new: Iterable[str] = ()) -> LoadReport:
    """Loads ``weights`` into ``model``.

    Keys of the file under a ``drop`` prefix, and layers the model does not have, are dropped.
    Model tensors under a ``may_stay_new`` prefix may be absent from the file; any other absent
    tensor, and any tensor of the wrong shape, refuses the load with a CheckpointError.
    """
    drop, may_stay_new = tuple(drop), tuple(may_stay_new)
    own = model.state_dict()
    report = LoadReport()
    to_load: dict[str, Tensor] = {}
    wrong_shape: list[str] = []
    for key, value in weights.state_dict.items():
        if key.startswith(drop) or key not in own:
            report.dropped.append(key)
        elif own[key].shape != value.shape:
            wrong_shape.append(key)
        else:
            to_load[key] = value
    if wrong_shape:
        # Name the latents when they differ: their shape says width and count at a glance.
        example = 'core.latents' if 'core.latents' in wrong_shape else wrong_shape[0]
        raise CheckpointError(
            weights.path, f'has {len(wrong_shape)} tensors of another shape than the model, e.g. '
            f'{example} {tuple(weights.state_dict[example].shape)} where the model has '
            f'{tuple(own[example].shape)}', 'The checkpoint is of another size: set arch to match it')
    absent = [k for k in own if k not in to_load]
    missing = [k for k in absent if not k.startswith(may_stay_new)]
    if missing:
        raise CheckpointError(
            weights.path, f'lacks {len(missing)} tensors the model needs: {describe(missing)} '
            f'({", ".join(missing[:3])}{", ..." if len(missing) > 3 else ""})',
            'The file is incomplete or of another architecture: check arch, or download it again')
    model.load_state_dict(to_load, strict=False)
    report.loaded, report.new = sorted(to_load, key=_natural), absent
    return report
