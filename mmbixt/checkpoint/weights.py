"""BiXT weights from any source, in one layout, checked against the model that receives them.

Sources: released classifier checkpoints (timm layout, ``latents`` / ``blocks.i``), files written by
``tools/convert_checkpoint.py``, and mmseg training checkpoints (``backbone.`` prefix), all read by
``normalise_checkpoint`` (``loading.py``) into the layout of the mmbixt models (every
``BiXTEncoder``), whose core lives under ``core.`` (``core.latents``, ``core.blocks.i``).

Before the one apply step (``load_weights`` = ``apply_state_dict`` with the route's policy),
``BiXTWeights.arch_problems`` compares everything the file reveals (stored name, stored token stride
or ``pos`` grid, widths, heads, depth, absent layers, LayerScale, tokenizer) with the model's arch.
``strict=False`` turns every refusal into a logged warning (for experts).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Optional

from mmengine.logging import print_log
from torch import Tensor, nn

from ..archs import RELEASED_ARCHS, BiXTArch, canonical_name, variant_of_name
from .loading import (LoadPolicy, LoadReport, PlainCheckpoint, apply_state_dict,
                      normalise_checkpoint)
from .reader import CheckpointError, PathLike

CLASSIFIER_ONLY = ('fc_norm.', 'head.', 'norm_lat.')
FIXED_POS_BUFFER = 'fourier_pos_encode.pos'
# Files with the fixed ``pos`` buffer were trained at 224px: its grid is 224 / token stride.
POS_BUFFER_IMAGE_SIZE = 224
IMAGE_TOKENIZER_PREFIXES = ('patch_embed.', 'fourier_pos_encode.')
SEGMENTOR_BACKBONE = 'backbone.'
_BIDIRECTIONAL = re.compile(r'^core\.blocks\.(\d+)\.cross_attention_latents_token\.attn\.rv_latents\.weight$')
_ONE_SIDED = re.compile(r'^core\.blocks\.(\d+)\.cross_attention_latents_token\.attn\.r_latents\.weight$')
_BLOCK = re.compile(r'^core\.blocks\.(\d+)\.')
_LAYER_SCALE = re.compile(r'^core\.blocks\.\d+\..*\.gamma$')
LINEAR_TOKENIZER_WEIGHT = 'patch_embed.proj.weight'
_CONV_STAGE = re.compile(r'^patch_embed\.proj\.(\d+)\.0\.weight$')


def stored_name(raw: object) -> Optional[str]:
    """The released name a checkpoint stores: ``arch`` (released files), ``meta['bixt_arch']``
    (converted files) or ``args.model`` (the original training script); None without one."""
    if not isinstance(raw, dict):
        return None
    meta = raw.get('meta') if isinstance(raw.get('meta'), dict) else {}
    for name in (raw.get('arch'), meta.get('bixt_arch'), getattr(raw.get('args'), 'model', None)):
        if isinstance(name, str) and name:
            return canonical_name(name)
    return None


def stored_token_stride(raw: object) -> Optional[int]:
    """``meta['token_stride']`` as ``tools/convert_checkpoint.py`` stores it; None without one."""
    meta = raw.get('meta') if isinstance(raw, dict) else None
    stride = meta.get('token_stride') if isinstance(meta, dict) else None
    return stride if isinstance(stride, int) and not isinstance(stride, bool) else None


@dataclass
class BiXTWeights:
    """The weights of one checkpoint file in the mmbixt layout, and what they reveal of the model
    that wrote them."""
    path: str
    state_dict: dict[str, Tensor]
    model_name: Optional[str] = None
    stored_stride: Optional[int] = None  # ``meta['token_stride']`` of a converted file

    @classmethod
    def from_file(cls, path: PathLike, use_ema: bool = False) -> 'BiXTWeights':
        """The BiXT weights of any supported file (``normalise_checkpoint``); from an mmseg
        segmentor checkpoint, its backbone's."""
        return cls.from_checkpoint(normalise_checkpoint(path, use_ema=use_ema))

    @classmethod
    def from_checkpoint(cls, checkpoint: PlainCheckpoint) -> 'BiXTWeights':
        state = checkpoint.state_dict
        if any(k.startswith(SEGMENTOR_BACKBONE) for k in state):
            state = {k[len(SEGMENTOR_BACKBONE):]: v for k, v in state.items()
                     if k.startswith(SEGMENTOR_BACKBONE)}
        weights = cls(checkpoint.path, state, stored_name(checkpoint.raw),
                      stored_token_stride(checkpoint.raw))
        if 'core.latents' not in weights.state_dict or not weights.bidirectional_layers:
            sample = ', '.join(sorted(weights.state_dict)[:4]) or 'none'
            raise CheckpointError(
                checkpoint.path, f'is not a BiXT checkpoint (no latents and no bi-directional '
                f'layers; keys start with: {sample})',
                'Point at a BiXT checkpoint from the weights table, or a file written by mmbixt')
        return weights

    def as_checkpoint(self) -> PlainCheckpoint:
        return PlainCheckpoint(self.path, self.state_dict, None)

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
    def deepest_layer(self) -> int:
        """The index of the file's deepest layer (-1 without any)."""
        return max((int(m.group(1)) for k in self.state_dict if (m := _BLOCK.match(k))),
                   default=-1)

    @property
    def absent_layers(self) -> list[int]:
        """Layers below the deepest one the file has no tensor of."""
        found = {int(m.group(1)) for k in self.state_dict if (m := _BLOCK.match(k))}
        return [i for i in range(self.deepest_layer) if i not in found]

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
    def pos_buffer_stride(self) -> Optional[float]:
        """The token stride the fixed ``pos`` buffer implies (its grid covers 224px); None
        without one."""
        pos = self.state_dict.get(FIXED_POS_BUFFER)
        return None if pos is None else POS_BUFFER_IMAGE_SIZE / pos.shape[-1]

    @property
    def known_stride(self) -> Optional[float]:
        """The token stride the file reveals: by its stored name, its stored ``token_stride``
        or the grid of its fixed ``pos`` buffer; None when it cannot tell."""
        variant = variant_of_name(self.model_name) if self.model_name else None
        if variant is not None:
            return variant[1]
        return self.stored_stride or self.pos_buffer_stride

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
                      min_layers: Optional[int] = None,
                      classifier_layers: Optional[int] = None) -> list[str]:
        """What the file reveals that disagrees with ``arch`` (each a sentence), compared in this
        order: tokenizer (kind and patch size by its tensors, token stride by the stored name or
        the ``pos`` grid), width and latents, heads (by a stored released name), LayerScale,
        bi-directional layers (at least ``min_layers``; or, for a classifier, exactly
        ``classifier_layers`` and the one-sided last layer). ``image_tokenizer=False`` (a point
        backbone) skips the tokenizer."""
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
            *self._layer_problems(min_layers, classifier_layers, arch_hint)]
        return [problem for problem in problems if problem]

    def _layer_problems(self, min_layers: Optional[int], classifier_layers: Optional[int],
                        arch_hint: str) -> list[Optional[str]]:
        """A layer absent from the file is named first: the depth it leaves would mislead."""
        absent = self.absent_layers
        if absent:
            shown = ', '.join(map(str, absent))
            return [f'lacks every tensor of layer{"s" * (len(absent) > 1)} {shown} (it holds '
                    f'layers up to {self.deepest_layer}): the file is incomplete']
        return [self._depth_problem(min_layers, arch_hint) if min_layers is not None else None,
                self._classifier_depth_problem(classifier_layers, arch_hint)
                if classifier_layers is not None else None]

    def _tokenizer_problem(self, arch: BiXTArch, arch_hint: str) -> Optional[str]:
        held = self.image_tokenizer
        if held is not None and held != (arch.tokenizer, arch.patch_size):
            return (f'has a {held[0]} tokenizer of patch size {held[1]}, but {arch_hint} has a '
                    f'{arch.tokenizer} tokenizer of patch size {arch.patch_size}')
        return self._variant_problem(arch.tokenizer, arch.stride, arch_hint)

    def _variant_problem(self, tokenizer: str, stride: int, arch_hint: str) -> Optional[str]:
        # p16, p16s8 and p16s4 share every tensor shape: only the stored name or the grid of a
        # fixed ``pos`` buffer tells them apart.
        variant = variant_of_name(self.model_name) if self.model_name else None
        if variant is not None and variant != (tokenizer, stride):
            return (f'holds {self.model_name} ({variant[0]} tokenizer, token stride {variant[1]}), '
                    f'but the model was built as {arch_hint} ({tokenizer} tokenizer, token stride '
                    f'{stride})')
        implied = self.known_stride
        if variant is None and implied is not None and implied != stride:
            evidence = (f'stores token stride {implied:g}' if self.stored_stride else
                        f'has a fixed positional buffer for token stride {implied:g} (a '
                        f'{POS_BUFFER_IMAGE_SIZE}px grid)')
            return (f'{evidence}, but the model was built as {arch_hint} (token stride '
                    f'{stride})')
        return None

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

    def _classifier_depth_problem(self, layers: int, arch_hint: str) -> Optional[str]:
        if not self.has_one_sided_layer:
            return 'has no one-sided last layer: it holds a backbone, not a classifier'
        have = self.bidirectional_layers
        if have == layers:
            return None
        return (f'holds a classifier of depth {have + 1} ({have} bi-directional layers), but '
                f'{arch_hint} has depth {layers + 1}')

    def unverified(self, arch: BiXTArch) -> list[str]:
        """What the file cannot tell: a linear tokenizer's stride when no name is stored (p16,
        p16s8 and p16s4 share every tensor shape)."""
        held = self.image_tokenizer
        if held is None or held[0] != 'linear' or self.known_stride is not None:
            return []
        return [f'stores no model name, so its token stride cannot be checked (p16, p16s8 and '
                f'p16s4 share every tensor shape); it is loaded as token stride {arch.stride}. If '
                'it was trained at another stride the features are wrong: store the name with '
                'tools/convert_checkpoint.py --arch NAME']

    def check_arch(self, arch: BiXTArch, arch_hint: str, *, strict: bool = True,
                   image_tokenizer: bool = True, min_layers: Optional[int] = None,
                   classifier_layers: Optional[int] = None,
                   opt_out: Optional[str] = 'init_cfg strict=False') -> list[str]:
        """Refuses (``strict``) or logs the ``arch_problems``; logs what cannot be verified.
        ``opt_out`` names the model's setting that loads anyway (None: it has none). Returns the
        warnings logged."""
        problems = self.arch_problems(arch, arch_hint, image_tokenizer=image_tokenizer,
                                      min_layers=min_layers, classifier_layers=classifier_layers)
        if problems and strict:
            self._refuse(problems, 'Set arch to match the file' + (
                f' (arch={self.model_name!r})' if self.released_arch else '') + ', or point at a '
                'checkpoint of this model' + (
                    f' ({opt_out} loads it anyway and logs the differences)' if opt_out else ''))
        warnings = problems + (self.unverified(arch) if image_tokenizer else [])
        for warning in warnings:
            print_log(f'{self.path}: {warning}', logger='current', level=logging.WARNING)
        return warnings

    def _refuse(self, problems: list[str], fix: str) -> None:
        raise CheckpointError(self.path, '; '.join(problems), fix)


def load_weights(model: nn.Module, weights: BiXTWeights, policy: LoadPolicy, *,
                 strict: bool = True) -> LoadReport:
    """``apply_state_dict`` for BiXT weights: loads them into ``model`` under ``policy``, the
    summary line naming the stored model."""
    return apply_state_dict(model, weights.as_checkpoint(), policy, strict=strict,
                            name=weights.model_name)
