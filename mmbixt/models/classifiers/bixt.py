"""BiXT ImageNet classifiers for timm: the model, its pretrained configs and the registered names.

Every released classifier (and the original ``bixt_ti_cnv_l64_*`` spelling of the conv ones) is a timm
model once ``mmbixt`` is imported. The loading routes timm documents, and how each reaches a BiXT file
(only public timm hooks are used):

* ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))``: the pretrained
  cfg has ``custom_load=True``, so timm hands the file to ``model.load_pretrained``, which reads a
  released zip as downloaded (or its ``.pth.tar``, or an http(s) address, downloaded into the cache)
  through ``mmbixt.checkpoint`` (``weights_only``, only data classes allowed) and checks the stored
  name, widths, depth and tokenizer.
* ``create_model(name, checkpoint_path=PATH)`` and ``timm.models.load_checkpoint(model, PATH)``: timm
  reads ``PATH`` itself (``torch.load(weights_only=True)``) and passes the state dict to
  ``model.load_state_dict``. That reader cannot open a zip, and no hook runs before it: these routes
  take the ``.pth.tar`` inside the zip. ``load_state_dict`` recognises the released layout and loads
  it like ``load_pretrained`` (``normalise_checkpoint`` + ``apply_state_dict``); timm's other
  pretrained sources (e.g. ``pretrained_cfg_overlay=dict(state_dict=...)``) pass
  ``checkpoint_filter_fn`` (the same normalisation and checks).

A head for another number of classes stays new and says so at WARNING on the console.

The fixed ``pos`` buffer of 224px files is dropped (the positional encoding is computed for the grid of
every input); it still tells the token stride of a file read without its stored name.
"""
# No ``from __future__ import annotations``: torch.fx reads ``forward``'s annotations as types.
import logging
from collections import namedtuple
from typing import Optional, Sequence, Union

import timm
import torch
from mmengine.logging import print_log
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import (build_model_with_cfg, generate_default_cfgs, register_model,
                         resolve_pretrained_cfg)
from torch import Tensor, nn

from ...archs import ARCH_ALIASES, RELEASED_ARCHS, BiXTArch, canonical_name
from ...checkpoint import (FIXED_POS_BUFFER, BiXTWeights, CheckpointError, LoadPolicy, LoadReport,
                           load_weights, normalise_checkpoint, to_core_layout)
from ...checkpoint.loading import WRAPPER_PREFIXES
from ..core import (BiXTEncoder, ImageEmbedding, build_core, layer_norm, pad_to_multiple,
                    take_indices)
from ..core.layers import ExecutionLike

__all__ = ['BiXTClassifier', 'CLASSIFIER_NAMES', 'checkpoint_filter_fn', 'create_classifier']

# Every registered timm name: the 17 released ones and the original spelling of the conv models.
CLASSIFIER_NAMES: tuple[str, ...] = tuple(RELEASED_ARCHS) + tuple(ARCH_ALIASES)
# ``features_only`` returns the tokens of these bi-directional layers unless ``out_indices`` is given:
# the layers the dense BiXT models read (the last one counted from the end, so d12 models work too).
FEATURE_OUT_INDICES = (3, 5, 7, -1)
# What ``load_state_dict`` returns, as ``nn.Module.load_state_dict`` does.
IncompatibleKeys = namedtuple('IncompatibleKeys', ['missing_keys', 'unexpected_keys'])
STATE_DICT_SOURCE = 'the state dict loaded into the BiXT classifier (read without its stored name)'


def in_released_layout(state_dict: dict) -> bool:
    """True for the key layout of the released files (``latents``/``blocks.i`` at the top, the fixed
    ``pos`` buffer, DDP or torch.compile prefixes); False for the model's own ``state_dict()``."""
    return any(key.startswith(WRAPPER_PREFIXES) or key == FIXED_POS_BUFFER
               or to_core_layout(key) != key for key in state_dict)


def checkpoint_filter_fn(state_dict: dict, model: 'BiXTClassifier') -> dict:
    """timm's pretrained filter: a BiXT state dict in the released layout -> the model's layout.

    Refuses (CheckpointError) a state dict of another variant, width, depth or tokenizer than
    ``model`` (``BiXTClassifier.check_weights``); drops the fixed ``pos`` buffer.
    """
    weights = BiXTWeights.from_checkpoint(
        normalise_checkpoint(state_dict, shown_as=STATE_DICT_SOURCE))
    model.check_weights(weights)
    return {key: value for key, value in weights.state_dict.items() if key != FIXED_POS_BUFFER}


class BiXTClassifier(BiXTEncoder):
    """BiXT image classifier (timm API): a ``BiXTEncoder`` with the one-sided (latent-only) last
    layer, then the mean of the latents -> ``fc_norm`` -> ``head``.

    Inputs of any size work: sides that are not multiples of the token stride are zero-padded at the
    bottom and right (as ``BiXTBackbone`` does), and the positional encoding is computed for the grid.

    Args:
        arch: a released name (either spelling of the conv models), a ``BiXTArch``, or a dict of
            ``mmbixt.archs.ARCH_DICT_KEYS``. ``num_layers`` counts the bi-directional layers; the
            one-sided layer comes on top (depth ``num_layers + 1``).
        num_classes: classes of the head; 0 leaves the head out (``forward`` returns pre-logits).
        in_chans: input image channels.
        global_pool: only ``'avg'`` (the mean over the latents), as trained.
        drop_rate: dropout before the head.
        drop_path_rate: stochastic depth, rising linearly over the layers.
        execution: the core's ``ExecutionSettings`` (or a dict of its fields), as for
            ``BiXTBackbone`` (change them later with ``set_execution``).
    """
    # Eager-only properties: TorchScript skips them.
    __jit_unused_properties__ = BiXTEncoder.__jit_unused_properties__ + ['grad_checkpointing']

    def __init__(self, arch: Union[str, dict, BiXTArch] = 'bixt_ti_l64_p16', num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = 'avg', drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, execution: ExecutionLike = None):
        super().__init__(ImageEmbedding.from_arch(arch, in_chans),
                         build_core(arch, drop_path_rate, one_sided_last=True,
                                    execution=execution), arch)
        self._check_pool(global_pool)
        self.global_pool = global_pool
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = self.embed_dim = self.embed_dims
        # One entry per bi-directional layer: its refined tokens, a map at the token stride.
        self.feature_info = [dict(module=f'core.blocks.{i}', num_chs=self.embed_dims,
                                  reduction=self.stride) for i in range(self.num_layers)]
        self.fc_norm = layer_norm(self.embed_dims)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._new_head(num_classes)

    @staticmethod
    def _check_pool(global_pool: str) -> None:
        if global_pool != 'avg':
            raise ValueError(f"BiXT pools the latents by their mean: global_pool must be 'avg', "
                             f'got {global_pool!r}')

    def _new_head(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        head = nn.Linear(self.num_features, num_classes)
        nn.init.zeros_(head.weight)  # as timm's ViT: a new head starts from zero logits
        nn.init.zeros_(head.bias)
        return head

    # ---------------------------------------------------------------- timm API
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool:  # timm passes '' when pruning the head
            self._check_pool(global_pool)
        self.num_classes = num_classes
        self.head = self._new_head(num_classes).to(self.core.latents.device)

    @property
    def grad_checkpointing(self) -> bool:
        return self.core.execution.with_cp

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.set_execution(with_cp=enable)

    def no_weight_decay(self) -> set[str]:
        return {'core.latents'}

    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for timm's layer decay: the embedding (tokenizer, positional encoding,
        latents), one group per layer (``fc_norm`` with the last, as timm's ViT places its final
        norm); the head, matched by none, gets the top group."""
        return dict(stem=r'^core\.latents|^patch_embed|^fourier_pos_encode',
                    blocks=r'^core\.blocks\.(\d+)' if coarse else [
                        (r'^core\.blocks\.(\d+)', None), (r'^fc_norm', (99999,))])

    def forward_features(self, x: Tensor) -> Tensor:
        """The final latents ``[B, L, D]``."""
        if torch.jit.is_scripting():  # the image embedding of fp32 images, from its modules
            tokens = self.fourier_pos_encode.tokens_of(
                self.patch_embed(pad_to_multiple(x, self.stride)))
        else:
            tokens = self.embed(x).tokens
        latents, _ = self.core(tokens)
        return latents

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_drop(self.fc_norm(x.mean(dim=1)))
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    # ---------------------------------------------------------------- intermediates (timm 1.x)
    # ``forward_intermediates`` is the encoder's: the refined tokens of the bi-directional layers,
    # through ``fc_norm`` with ``norm=True``; ``forward_head`` turns its final latents into logits.
    def intermediate_norms(self, taken: Sequence[int]) -> list[nn.Module]:
        return [self.fc_norm] * len(taken)

    def prune_intermediate_layers(self, indices: Union[int, Sequence[int]] = 1,
                                  prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """Drops the layers after the last of ``indices`` (and ``fc_norm`` / the head when asked);
        returns the kept indices, counted from the first layer."""
        kept = take_indices(self.core.num_token_layers, indices)
        self.core.blocks = self.core.blocks[:max(kept) + 1]
        if prune_norm:
            self.fc_norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return kept

    # ---------------------------------------------------------------- weights
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``; a state dict in the released layout (what timm's
        ``load_checkpoint`` and ``create_model(checkpoint_path=...)`` read from a released
        ``.pth.tar``) is loaded by ``load_bixt_weights`` instead: remapped, checked against the
        arch (a CheckpointError for another variant, width, depth or tokenizer) and applied under
        the loading policy."""
        if not in_released_layout(state_dict):
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        weights = BiXTWeights.from_checkpoint(
            normalise_checkpoint(state_dict, shown_as=STATE_DICT_SOURCE))
        report = self.load_bixt_weights(weights, strict=strict)
        return IncompatibleKeys(report.missing, report.unexpected)

    def load_pretrained(self, path: str, use_ema: bool = False) -> LoadReport:
        """Loads a BiXT classifier checkpoint (a released zip as downloaded, its ``.pth.tar``, ...).

        Refuses, with a CheckpointError, a file of another tokeniser or stride, another depth or
        width. A head for another number of classes is left new.
        """
        return self.load_bixt_weights(BiXTWeights.from_file(path, use_ema=use_ema))

    def load_bixt_weights(self, weights: BiXTWeights, strict: bool = True) -> LoadReport:
        """Loads weights already read by ``BiXTWeights.from_file``, with the checks above;
        ``strict=False`` loads what matches and logs the rest."""
        self.check_weights(weights)
        stored_head = weights.state_dict.get('head.weight')
        keep_head = stored_head is not None and stored_head.shape[0] == self.num_classes
        new_head = () if keep_head else ('head.',)
        # The fixed ``pos`` buffer is the documented drop; a new head is announced (WARNING).
        policy = LoadPolicy(drop=(FIXED_POS_BUFFER,) + new_head, may_stay_new=new_head,
                            defaults=(FIXED_POS_BUFFER,),
                            fix='Point at a checkpoint of this classifier',
                            opt_out='timm.models.load_checkpoint(model, PATH, strict=False) '
                                    'loads what matches')
        report = load_weights(self, weights, policy, strict=strict)
        self._note_other_resolution(weights.model_name)
        return report

    def check_weights(self, weights: BiXTWeights) -> None:
        """Refuses weights of another model under the loading policy's comparison
        (``BiXTWeights.check_arch``: tokenizer and stride, width, latents, heads, LayerScale) and
        the classifier's exact depth (a one-sided last layer on top of ``num_layers``)."""
        if 'core.latents' not in weights.state_dict:
            raise CheckpointError(weights.path, 'is not a BiXT checkpoint (it has no latents)',
                                  'Point at a BiXT classifier checkpoint')
        weights.check_arch(self.arch, self.arch_description,
                           classifier_layers=self.arch.num_layers, opt_out=None)

    def _note_other_resolution(self, stored: Optional[str]) -> None:
        # p16 and p16_ft384 share every shape and the tokeniser: only their data config differs.
        if stored and self.arch_name and stored in RELEASED_ARCHS and stored != self.arch_name:
            print_log(f'loading weights stored as {stored} into {self.arch_name}; the input '
                      f'size of {self.arch_name} ({self.arch.img_size}px) is used',
                      logger='current', level=logging.WARNING)


# ---------------------------------------------------------------- timm registration
def _cfg(arch: BiXTArch) -> dict:
    """The pretrained cfg (data config, head, source) of a BiXT classifier."""
    first_conv = 'patch_embed.proj' if arch.tokenizer == 'linear' else 'patch_embed.proj.0.0'
    return dict(
        num_classes=1000, input_size=(3, arch.img_size, arch.img_size), pool_size=None,
        crop_pct=0.875, interpolation='bicubic', fixed_input_size=False,
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, first_conv=first_conv,
        classifier='head', custom_load=True, license='mit', paper_ids='arXiv:2402.12138',
        paper_name='Perceiving Longer Sequences With Bi-Directional Cross-Attention Transformers',
        origin_url='https://github.com/mrkshllr/BiXT')


# The weights are not hosted: ``pretrained=True`` needs ``pretrained_cfg_overlay=dict(file=ZIP)``.
default_cfgs = generate_default_cfgs({f'{name}.in1k': _cfg(RELEASED_ARCHS[canonical_name(name)])
                                     for name in CLASSIFIER_NAMES})


def _create_bixt(variant: str, pretrained: bool = False, **kwargs) -> BiXTClassifier:
    # timm resets ``custom_load`` when an overlay names a file (and would read it with torch.load,
    # which cannot open the released zip): a BiXT file goes to ``model.load_pretrained`` unless
    # the overlay says ``custom_load=False``.
    overlay = dict(kwargs.get('pretrained_cfg_overlay') or {})
    overlay.setdefault('custom_load', True)
    kwargs['pretrained_cfg_overlay'] = overlay
    cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), overlay)
    if pretrained and not (cfg.file or cfg.url or cfg.state_dict):
        raise RuntimeError(
            f'{variant}: the BiXT weights are not hosted for download; pass the zip as downloaded '
            f"from the BiXT weights table: timm.create_model('{variant}', pretrained=True, "
            "pretrained_cfg_overlay=dict(file=PATH))")
    out_indices = kwargs.pop('out_indices', FEATURE_OUT_INDICES)
    return build_model_with_cfg(BiXTClassifier, variant, pretrained, arch=variant,
                                pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
                                **kwargs)


def _register(name: str) -> None:
    def entrypoint(pretrained: bool = False, **kwargs) -> BiXTClassifier:
        return _create_bixt(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = f'BiXT classifier {name} ({RELEASED_ARCHS[canonical_name(name)]}).'
    globals()[name] = register_model(entrypoint)


for _name in CLASSIFIER_NAMES:
    _register(_name)


def create_classifier(checkpoint: str, arch: Union[str, dict, None] = None,
                      use_ema: bool = False) -> BiXTClassifier:
    """A BiXT classifier with the weights of ``checkpoint``, read once, in eval mode.

    ``arch`` is a registered name (default: the name stored in the checkpoint) or, for a model of
    another size, a dict of ``mmbixt.archs.ARCH_DICT_KEYS``, which gets the 224px ImageNet data config
    and as many classes as the checkpoint's head.
    """
    weights = BiXTWeights.from_file(checkpoint, use_ema=use_ema)
    arch = arch or weights.model_name
    if arch is None:
        raise CheckpointError(checkpoint, 'does not say which BiXT model it holds',
                              'Name it with --arch (a released name such as bixt_ti_l64_p16)')
    if isinstance(arch, str):
        if canonical_name(arch) not in RELEASED_ARCHS:
            raise CheckpointError(checkpoint, f'holds {arch}, which is not a released BiXT classifier',
                                  'Name the architecture with --arch (a released name or a dict)')
        model = timm.create_model(arch)
    else:
        head = weights.state_dict.get('head.weight')
        model = BiXTClassifier(arch, num_classes=0 if head is None else head.shape[0])
        model.pretrained_cfg = model.default_cfg = _cfg(model.arch)
    model.load_bixt_weights(weights)
    return model.eval()
