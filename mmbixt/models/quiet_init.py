"""``init_weights`` without mmengine's per-parameter report.

mmengine's ``BaseModule.init_weights`` ends, on the module it was called on, with one multi-line
INFO message per parameter ("The value is the same before and after calling `init_weights`" for
everything initialised in a constructor: 445 messages for BiXT-Ti). Our modules initialise their
own parameters when built, so they apply the ``init_cfg`` entries through mmengine's public
``initialize`` instead and say nothing.
"""
from __future__ import annotations

from mmengine.model import BaseModule, PretrainedInit, initialize
from mmengine.registry import WEIGHT_INITIALIZERS
from torch import nn

from .derive import is_config_of


def is_pretrained(cfg: dict) -> bool:
    """Whether an ``init_cfg`` entry loads pretrained weights (``type='Pretrained'``, the class,
    or a subclass of mmengine's ``PretrainedInit``)."""
    return is_config_of(cfg, PretrainedInit, WEIGHT_INITIALIZERS)


def init_cfgs(module: nn.Module) -> list[dict]:
    cfg = getattr(module, 'init_cfg', None)
    return [] if not cfg else [cfg] if isinstance(cfg, dict) else list(cfg)


def has_own_init_weights(module: nn.Module) -> bool:
    """Whether ``module`` initialises itself some other way than ``BaseModule.init_weights``."""
    return type(module).init_weights is not BaseModule.init_weights


def apply_init_cfgs(module: BaseModule, pretrained: list) -> None:
    """Applies ``module``'s non-pretrained ``init_cfg`` entries, then visits its children;
    collects the ``Pretrained`` entries in ``pretrained``."""
    cfgs = init_cfgs(module)
    initialize(module, [cfg for cfg in cfgs if not is_pretrained(cfg)])
    pretrained += [(module, cfg) for cfg in cfgs if is_pretrained(cfg)]
    module.is_init = True
    for child in module.children():
        visit(child, pretrained)


def visit(module: nn.Module, pretrained: list) -> None:
    if isinstance(module, BaseModule):
        if module.is_init:
            return
        if has_own_init_weights(module):  # e.g. our backbones' checked pretrained loading
            module.init_weights()
        else:
            apply_init_cfgs(module, pretrained)
    elif hasattr(module, 'init_weights'):  # e.g. mmcv's ConvModule
        module.init_weights()
    else:
        for child in module.children():
            visit(child, pretrained)


class QuietInitWeights:
    """Mixin for a ``BaseModule`` (before it among the bases): ``init_weights()`` applies the
    ``init_cfg`` of the module and of every ``BaseModule`` inside it (outer before inner,
    ``Pretrained`` entries after all others, as mmengine orders them), lets modules with their
    own ``init_weights`` (ours, mmcv's ``ConvModule``) run it, and logs nothing."""

    def init_weights(self) -> None:
        pretrained: list = []
        apply_init_cfgs(self, pretrained)
        for module, cfg in pretrained:
            initialize(module, cfg)
