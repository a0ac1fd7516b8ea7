"""BiXT ImageNet classifiers for timm: the model, its pretrained configs and the registered names.

Every released classifier (and the original ``bixt_ti_cnv_l64_*`` spelling of the conv ones) is a timm
model once ``mmbixt`` is imported::

    model = timm.create_model('bixt_ti_l64_p16', pretrained=True,
                              pretrained_cfg_overlay=dict(file='bixt_ti_l64_p16.zip'))
    model = timm.create_model('bixt_ti_l64_p16', checkpoint_path='bixt_ti_l64_p16.zip')

Both read the zip as downloaded through ``mmbixt.checkpoint`` (``weights_only`` loading with only
``argparse.Namespace`` allowed), check that the file holds this variant and size, and drop the fixed
``pos`` buffer: the positional encoding is computed for the grid of every input.
"""
from __future__ import annotations

import functools
import logging
from typing import Optional, Union

import timm
import timm.models._factory as timm_factory
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import (build_model_with_cfg, generate_default_cfgs, register_model,
                         resolve_pretrained_cfg)
from torch import Tensor, nn

from ...archs import ARCH_ALIASES, RELEASED_ARCHS, BiXTArch, canonical_name, resolve_arch
from ...checkpoint import (FIXED_POS_BUFFER, BiXTWeights, CheckpointError, LoadReport, load_weights,
                           to_core_layout)
from ..core import BiXTCore, FourierPositionalEncoding2d, build_tokenizer, embed_image, layer_norm

__all__ = ['BiXTClassifier', 'CLASSIFIER_NAMES', 'create_classifier']

_logger = logging.getLogger(__name__)

# Every registered timm name: the 17 released ones and the original spelling of the conv models.
CLASSIFIER_NAMES: tuple[str, ...] = tuple(RELEASED_ARCHS) + tuple(ARCH_ALIASES)


def _released_layout_hook(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    # Lets ``load_state_dict`` take a released state dict as is (``latents``/``blocks.i`` at the top,
    # the fixed ``pos`` buffer), as timm's own ``load_checkpoint`` passes it for a ``.pth.tar``.
    for key in [k for k in state_dict if k.startswith(prefix)]:
        local = key[len(prefix):]
        if local == FIXED_POS_BUFFER:
            del state_dict[key]
        elif to_core_layout(local) != local:
            state_dict[prefix + to_core_layout(local)] = state_dict.pop(key)


class BiXTClassifier(nn.Module):
    """BiXT image classifier (timm API): tokens and latents refined by bi-directional
    cross-attention, a last latent-only layer, then the mean of the latents -> ``fc_norm`` -> ``head``.

    Args:
        arch: a released name (either spelling of the conv models), a ``BiXTArch``, or a dict of
            ``mmbixt.archs.ARCH_DICT_KEYS``. ``num_layers`` counts the bi-directional layers; the
            one-sided layer comes on top (depth ``num_layers + 1``).
        num_classes: classes of the head; 0 leaves the head out (``forward`` returns pre-logits).
        in_chans: input image channels.
        global_pool: only ``'avg'`` (the mean over the latents), as trained.
        drop_rate: dropout before the head.
        drop_path_rate: stochastic depth, rising linearly over the layers.
    """

    def __init__(self, arch: Union[str, dict, BiXTArch] = 'bixt_ti_l64_p16', num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = 'avg', drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        self.arch, self.arch_name = resolve_arch(arch)
        arch_: BiXTArch = self.arch
        self._check_pool(global_pool)
        self.global_pool = global_pool
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = self.embed_dim = arch_.embed_dims
        self.grad_checkpointing = False

        self.patch_embed = build_tokenizer(arch_.tokenizer, in_chans, arch_.embed_dims,
                                           arch_.patch_size, arch_.stride)
        self.fourier_pos_encode = FourierPositionalEncoding2d(arch_.embed_dims)
        self.core = BiXTCore.from_arch(arch_, one_sided_last=True,
                                       cross_drop_path_rate=drop_path_rate,
                                       self_drop_path_rate=drop_path_rate)
        self.fc_norm = layer_norm(arch_.embed_dims)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._new_head(num_classes)
        self.register_load_state_dict_pre_hook(_released_layout_hook)

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

    @property
    def arch_description(self) -> str:
        return self.arch_name or (f'a {self.arch.tokenizer} stride-{self.arch.stride} BiXT '
                                  f'classifier of depth {self.arch.depth}')

    # ---------------------------------------------------------------- timm API
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is not None:
            self._check_pool(global_pool)
        self.num_classes = num_classes
        self.head = self._new_head(num_classes).to(self.fc_norm.weight.device)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = self.core.with_cp = enable

    def no_weight_decay(self) -> set[str]:
        return {'core.latents'}

    def forward_features(self, x: Tensor) -> Tensor:
        """The final latents ``[B, L, D]``."""
        tokens, _ = embed_image(self.patch_embed, self.fourier_pos_encode, x)
        latents, _ = self.core(tokens)
        return latents

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_drop(self.fc_norm(x.mean(dim=1)))
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    # ---------------------------------------------------------------- weights
    def load_pretrained(self, path: str, use_ema: bool = False) -> LoadReport:
        """Loads a BiXT classifier checkpoint (a released zip as downloaded, its ``.pth.tar``, ...).

        Refuses, with a CheckpointError, a file of another tokeniser or stride (by its stored name),
        another depth or width. A head for another number of classes is left new.
        """
        return self.load_bixt_weights(BiXTWeights.from_file(path, use_ema=use_ema))

    def load_bixt_weights(self, weights: BiXTWeights) -> LoadReport:
        """Loads weights already read by ``BiXTWeights.from_file``, with the checks above."""
        weights.check_variant(self.arch.tokenizer, self.arch.stride, self.arch_description)
        self._check_depth(weights)
        stored_head = weights.state_dict.get('head.weight')
        keep_head = stored_head is not None and stored_head.shape[0] == self.num_classes
        new_head = () if keep_head else ('head.',)
        report = load_weights(self, weights, drop=(FIXED_POS_BUFFER,) + new_head,
                              may_stay_new=new_head)
        self._note_other_resolution(weights.model_name)
        _logger.info(report.summary(weights.path, weights.model_name))
        return report

    def _check_depth(self, weights: BiXTWeights) -> None:
        have, want = weights.bidirectional_layers, self.arch.num_layers
        if not weights.has_one_sided_layer:
            raise CheckpointError(
                weights.path, 'has no one-sided last layer: it holds a backbone, not a classifier',
                'Point at a classifier checkpoint from the BiXT weights table')
        if have != want:
            raise CheckpointError(
                weights.path, f'holds a classifier of depth {have + 1} ({have} bi-directional '
                f'layers), but the model was built as {self.arch_description} (depth {want + 1})',
                'Set the model name (arch) to the one the file was trained as'
                + (f' ({weights.model_name})' if weights.model_name else ''))

    def _note_other_resolution(self, stored: Optional[str]) -> None:
        # p16 and p16_ft384 share every shape and the tokeniser: only their data config differs.
        if stored and self.arch_name and stored in RELEASED_ARCHS and stored != self.arch_name:
            _logger.warning(f'loading weights stored as {stored} into {self.arch_name}; the input '
                            f'size of {self.arch_name} ({self.arch.img_size}px) is used')


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
    # timm resets ``custom_load`` when an overlay names a file, and would then read it with
    # ``torch.load``; a BiXT file always goes to ``model.load_pretrained`` unless said otherwise.
    overlay = dict(kwargs.get('pretrained_cfg_overlay') or {})
    overlay.setdefault('custom_load', True)
    kwargs['pretrained_cfg_overlay'] = overlay
    cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), overlay)
    if pretrained and not (cfg.file or cfg.url or cfg.state_dict):
        raise RuntimeError(
            f'{variant}: the BiXT weights are not hosted for download; pass the zip as downloaded '
            f"from the BiXT weights table: timm.create_model('{variant}', pretrained=True, "
            "pretrained_cfg_overlay=dict(file=PATH)), or checkpoint_path=PATH")
    return build_model_with_cfg(BiXTClassifier, variant, pretrained, arch=variant, **kwargs)


def _register(name: str) -> None:
    def entrypoint(pretrained: bool = False, **kwargs) -> BiXTClassifier:
        return _create_bixt(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = f'BiXT classifier {name} ({RELEASED_ARCHS[canonical_name(name)]}).'
    globals()[name] = register_model(entrypoint)


for _name in CLASSIFIER_NAMES:
    _register(_name)


def _route_checkpoint_path_to_bixt() -> None:
    """Makes ``timm.create_model(name, checkpoint_path=ZIP)`` load through ``load_pretrained``.

    ``create_model`` loads ``checkpoint_path`` with ``timm.models._factory.load_checkpoint`` and no
    model hook in between; that function reads the file with ``torch.load``, which cannot open the
    released zip (a plain zip holding a ``.pth.tar``), and loads without our variant/depth checks.
    Wrapping that one module attribute is the only way in; the wrapper diverts BiXT classifiers only,
    loading their regular weights (``state_dict``, as the backbone does; timm would prefer the EMA
    copy), and leaves every other model to timm unchanged.
    """
    original = getattr(timm_factory, 'load_checkpoint', None)
    if original is None or getattr(original, 'routes_bixt', False):
        return

    @functools.wraps(original)
    def load_checkpoint(model: nn.Module, checkpoint_path: str, *args, **kwargs):
        if isinstance(model, BiXTClassifier):
            return model.load_pretrained(checkpoint_path)
        return original(model, checkpoint_path, *args, **kwargs)

    load_checkpoint.routes_bixt = True
    timm_factory.load_checkpoint = load_checkpoint


_route_checkpoint_path_to_bixt()


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
