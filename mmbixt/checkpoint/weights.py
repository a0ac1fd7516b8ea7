"""BiXT weights from any source, in one layout, checked against the model that receives them.

Sources: released classifier checkpoints (timm layout, ``latents`` / ``blocks.i``), files written by
``tools/convert_checkpoint.py``, and mmseg training checkpoints (``backbone.`` prefix). All are brought
to the layout of the mmbixt models (every ``BiXTEncoder``), whose core lives under ``core.``
(``core.latents``, ``core.blocks.i``) by the one remap ``to_core_layout``.

The loading policy (``load_weights``): every tensor of the file loads, or is in the model's
documented drop set (logged), or the load is refused naming it; every tensor of the model is loaded
or in its documented "stays new" set. Before that, ``BiXTWeights.arch_problems`` compares everything
the file reveals (stored name, widths, heads, depth, LayerScale, tokenizer) with the model's arch.
``strict=False`` turns every refusal into a logged warning (for experts).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

from mmengine.logging import print_log
from torch import Tensor, nn

from ..archs import RELEASED_ARCHS, BiXTArch, canonical_name, variant_of_name
from .reader import CheckpointError, PathLike, read_checkpoint

WRAPPER_PREFIXES = ('module.', '_orig_mod.')
CLASSIFIER_ONLY = ('fc_norm.', 'head.', 'norm_lat.')
FIXED_POS_BUFFER = 'fourier_pos_encode.pos'
IMAGE_TOKENIZER_PREFIXES = ('patch_embed.', 'fourier_pos_encode.')
_BIDIRECTIONAL = re.compile(r'^core\.blocks\.(\d+)\.cross_attention_latents_token\.attn\.rv_latents\.weight$')
_ONE_SIDED = re.compile(r'^core\.blocks\.(\d+)\.cross_attention_latents_token\.attn\.r_latents\.weight$')
_BLOCK = re.compile(r'^core\.blocks\.(\d+)\.')
_LAYER_SCALE = re.compile(r'^core\.blocks\.\d+\..*\.gamma$')
LINEAR_TOKENIZER_WEIGHT = 'patch_embed.proj.weight'
_CONV_STAGE = re.compile(r'^patch_embed\.proj\.(\d+)\.0\.weight$')


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
    """The one remap from the released (timm) layout to the mmbixt one: the core's latents and
    layers move under ``core.``; tokenizer, encoding and classifier keys keep their names."""
    if key == 'latents' or key.startswith('blocks.'):
        return 'core.' + key
    return key


def remap_released(state_dict: dict) -> dict:
    """A released-layout state dict (possibly DDP / torch.compile wrapped) in the mmbixt layout."""
    return {to_core_layout(strip_wrappers(k)): v for k, v in state_dict.items()}


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
    """The weights of one checkpoint file in the mmbixt layout, and what they reveal of the model
    that wrote them."""
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
        weights = cls(str(path), remap_released(state), _stored_name(ckpt))
        if 'core.latents' not in weights.state_dict or not weights.bidirectional_layers:
            sample = ', '.join(sorted(weights.state_dict)[:4]) or 'none'
            raise CheckpointError(
                path, f'is not a BiXT checkpoint (no latents and no bi-directional layers; '
                f'keys start with: {sample})',
                'Point at a BiXT checkpoint from the weights table, or a file written by mmbixt')
        return weights

    # ---------------------------------------------------------------- what the file reveals
    @property
    def bidirectional_layers(self) -> int:
        """Bi-directional layers, counted as the consecutive run from layer 0."""
        found = {int(m.group(1)) for k in self.state_dict if (m := _BIDIRECTIONAL.match(k))}
        count = 0
        while count in found:
            count += 1
        return count

    @property
    def has_one_sided_layer(self) -> bool:
        return any(_ONE_SIDED.match(k) for k in self.state_dict)

    @property
    def layer_scale(self) -> bool:
        """Whether the layers carry LayerScale (``ls*.gamma``)."""
        return any(_LAYER_SCALE.match(k) for k in self.state_dict)

    @property
    def latents_shape(self) -> tuple[int, int]:
        """``(num_latents, embed_dims)``."""
        shape = self.state_dict['core.latents'].shape
        return int(shape[-2]), int(shape[-1])

    @property
    def image_tokenizer(self) -> Optional[tuple[str, int]]:
        """``(kind, patch_size)`` of the image tokenizer the file holds; None when it has none."""
        if LINEAR_TOKENIZER_WEIGHT in self.state_dict:
            return 'linear', int(self.state_dict[LINEAR_TOKENIZER_WEIGHT].shape[-1])
        stages = {int(m.group(1)) for k in self.state_dict if (m := _CONV_STAGE.match(k))}
        return ('conv', 2 ** len(stages)) if stages else None

    @property
    def released_arch(self) -> Optional[BiXTArch]:
        return RELEASED_ARCHS.get(self.model_name) if self.model_name else None

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """The tensors a dense backbone uses: no classifier head, no one-sided last layer, no
        fixed positional buffer."""
        layers = self.bidirectional_layers

        def used(key: str) -> bool:
            block = _BLOCK.match(key)
            return not key.startswith(CLASSIFIER_ONLY + (FIXED_POS_BUFFER,)) and (
                block is None or int(block.group(1)) < layers)
        return {k: v for k, v in self.state_dict.items() if used(k)}

    def deeper_layers(self, num_layers: int) -> tuple[str, ...]:
        """Prefixes of the file's layers from index ``num_layers`` on (including a one-sided one)."""
        found = {int(m.group(1)) for k in self.state_dict if (m := _BLOCK.match(k))}
        return tuple(f'core.blocks.{i}.' for i in sorted(found) if i >= num_layers)

    # ---------------------------------------------------------------- comparison with a model
    def arch_problems(self, arch: BiXTArch, arch_hint: str, *, image_tokenizer: bool = True,
                      min_layers: Optional[int] = None) -> list[str]:
        """What the file reveals that disagrees with ``arch`` (each a sentence), compared in this
        order: tokenizer (kind and patch size by its tensors, token stride by the stored name),
        width and latents, heads (by a stored released name), LayerScale, bi-directional layers (at
        least ``min_layers``). ``image_tokenizer=False`` (a point backbone) skips the tokenizer."""
        num_latents, dims = self.latents_shape
        released = self.released_arch
        problems = [
            self._tokenizer_problem(arch, arch_hint) if image_tokenizer else None,
            f'holds {num_latents} latents of width {dims}, but {arch_hint} has '
            f'{arch.num_latents} of width {arch.embed_dims}'
            if (num_latents, dims) != (arch.num_latents, arch.embed_dims) else None,
            f'holds {self.model_name} with {released.num_heads} heads, but {arch_hint} has '
            f'{arch.num_heads}' if released and released.num_heads != arch.num_heads else None,
            self._layer_scale_problem(arch, arch_hint),
            self._depth_problem(min_layers, arch_hint) if min_layers is not None else None]
        return [problem for problem in problems if problem]

    def _tokenizer_problem(self, arch: BiXTArch, arch_hint: str) -> Optional[str]:
        held = self.image_tokenizer
        if held is not None and held != (arch.tokenizer, arch.patch_size):
            return (f'has a {held[0]} tokenizer of patch size {held[1]}, but {arch_hint} has a '
                    f'{arch.tokenizer} tokenizer of patch size {arch.patch_size}')
        return self._variant_problem(arch.tokenizer, arch.stride, arch_hint)

    def _variant_problem(self, tokenizer: str, stride: int, arch_hint: str) -> Optional[str]:
        # p16, p16s8 and p16s4 share every tensor shape: only the stored name tells them apart.
        variant = variant_of_name(self.model_name) if self.model_name else None
        if variant is None or variant == (tokenizer, stride):
            return None
        return (f'holds {self.model_name} ({variant[0]} tokenizer, token stride {variant[1]}), '
                f'but the model was built as {arch_hint} ({tokenizer} tokenizer, token stride '
                f'{stride})')

    def _layer_scale_problem(self, arch: BiXTArch, arch_hint: str) -> Optional[str]:
        if self.layer_scale == arch.layer_scale:
            return None
        if self.layer_scale:
            return (f'has LayerScale (ls*.gamma tensors), but {arch_hint} was built without it '
                    '(arch layer_scale=False)')
        return (f'has no LayerScale (no ls*.gamma tensors), but {arch_hint} was built with it '
                '(arch layer_scale=True)')

    def _depth_problem(self, needed: int, arch_hint: str) -> Optional[str]:
        have = self.bidirectional_layers
        if have >= needed:
            return None
        extra = (' It looks like a d12 classifier, whose last layer is one-sided; the dense '
                 'backbones are the d13 checkpoints' if self.has_one_sided_layer else '')
        return f'has {have} bi-directional layers, but {arch_hint} runs {needed}.{extra}'

    def unverified(self, arch: BiXTArch) -> list[str]:
        """What the file cannot tell: a linear tokenizer's stride when no name is stored (p16,
        p16s8 and p16s4 share every tensor shape)."""
        held = self.image_tokenizer
        if held is None or held[0] != 'linear' or self.model_name is not None:
            return []
        return [f'stores no model name, so its token stride cannot be checked (p16, p16s8 and '
                f'p16s4 share every tensor shape); it is loaded as token stride {arch.stride}. If '
                'it was trained at another stride the features are wrong: store the name with '
                'tools/convert_checkpoint.py --arch NAME']

    def check_arch(self, arch: BiXTArch, arch_hint: str, *, strict: bool = True,
                   image_tokenizer: bool = True, min_layers: Optional[int] = None) -> list[str]:
        """Refuses (``strict``) or logs the ``arch_problems``; logs what cannot be verified.
        Returns the warnings logged."""
        problems = self.arch_problems(arch, arch_hint, image_tokenizer=image_tokenizer,
                                      min_layers=min_layers)
        if problems and strict:
            self._refuse(problems, 'Set arch to match the file' + (
                f' (arch={self.model_name!r})' if self.released_arch else '') + ', or point at a '
                'checkpoint of this model (init_cfg strict=False loads it anyway and logs the '
                'differences)')
        warnings = problems + (self.unverified(arch) if image_tokenizer else [])
        for warning in warnings:
            print_log(f'{self.path}: {warning}', logger='current', level=logging.WARNING)
        return warnings

    def _refuse(self, problems: list[str], fix: str) -> None:
        raise CheckpointError(self.path, '; '.join(problems), fix)

    # The tokenizer/stride and depth parts of ``check_arch`` on their own (the timm classifier).
    def check_variant(self, tokenizer: str, stride: int, arch_hint: str) -> None:
        problem = self._variant_problem(tokenizer, stride, arch_hint)
        if problem:
            self._refuse([problem], f'Set arch to match the file (arch={self.model_name!r} for a '
                                    'released one), or point at the checkpoint of this variant')

    def check_layers(self, needed: int, arch_hint: str) -> None:
        problem = self._depth_problem(needed, arch_hint)
        if problem:
            self._refuse([problem], f'Use a checkpoint with at least {needed} bi-directional '
                                    f'layers, or set num_layers to {self.bidirectional_layers} or '
                                    'fewer')


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

    def summary(self, path: str, name: Optional[str]) -> str:
        what = f' ({name})' if name else ''
        line = (f'Loaded {len(self.loaded)} tensors from {path}{what}; dropped '
                f'{len(self.dropped)}: {describe(self.dropped)}; left new {len(self.new)}: '
                f'{describe(self.new)}')
        for label, keys in (('ignored (not in the model)', self.unexpected),
                            ('missing from the file', self.missing),
                            ('ignored (other shape)', self.mismatched)):
            if keys:
                line += f'; strict=False: {label} {len(keys)}: {describe(keys)}'
        return line


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


def _some(keys: list[str], count: int = 3) -> str:
    return ', '.join(keys[:count]) + (', ...' if len(keys) > count else '')


def load_weights(model: nn.Module, weights: BiXTWeights, *, drop: Iterable[str] = (),
                 may_stay_new: Iterable[str] = (), strict: bool = True) -> LoadReport:
    """Loads ``weights`` into ``model`` under the one loading policy.

    A file tensor under a ``drop`` prefix (the model's documented drop set) is dropped; any other
    loads when the model has it in the same shape. A model tensor under a ``may_stay_new`` prefix
    may be absent from the file. Everything else (a file tensor the model lacks, one of another
    shape, a model tensor the file lacks) refuses the load with a CheckpointError naming it, or,
    with ``strict=False``, is skipped and logged.
    """
    drop, may_stay_new = tuple(drop), tuple(may_stay_new)
    own = model.state_dict()
    report = LoadReport()
    to_load: dict[str, Tensor] = {}
    for key, value in weights.state_dict.items():
        if key.startswith(drop):
            report.dropped.append(key)
        elif key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append(key)
        else:
            to_load[key] = value
    absent = [k for k in own if k not in to_load]
    report.missing = [k for k in absent if not k.startswith(may_stay_new)]
    problems = _policy_problems(report, weights, own)
    if problems and strict:
        raise CheckpointError(weights.path, '; '.join(problems),
                              'The file is of another architecture or incomplete: set arch to '
                              'match it, or download it again (init_cfg strict=False loads what '
                              'matches and logs the rest)')
    for problem in problems:
        print_log(f'{weights.path}: strict=False: {problem}', logger='current',
                  level=logging.WARNING)
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load, key=_natural)
    report.new = [k for k in absent if k not in report.missing]
    return report


def _policy_problems(report: LoadReport, weights: BiXTWeights, own: dict) -> list[str]:
    problems = []
    if report.mismatched:
        # Name the latents when they differ: their shape says width and count at a glance.
        example = 'core.latents' if 'core.latents' in report.mismatched else report.mismatched[0]
        problems.append(
            f'has {len(report.mismatched)} tensors of another shape than the model, e.g. {example} '
            f'{tuple(weights.state_dict[example].shape)} where the model has '
            f'{tuple(own[example].shape)}')
    if report.unexpected:
        problems.append(f'has {len(report.unexpected)} tensors the model does not have and does '
                        f'not drop: {describe(report.unexpected)} ({_some(report.unexpected)})')
    if report.missing:
        problems.append(f'lacks {len(report.missing)} tensors the model needs: '
                        f'{describe(report.missing)} ({_some(report.missing)})')
    return problems
