"""Settings a model derives from its backbone instead of restating them in the config.

A derived setting left out of a config (or ``None``) is filled in; one given that disagrees is
refused at build time with a message naming both settings.
"""
from __future__ import annotations

import inspect
from typing import Any, NamedTuple, Optional

from mmseg.registry import MODELS

from ..archs import resolve_arch


def _same(a: Any, b: Any) -> bool:
    as_list = (lambda v: list(v) if isinstance(v, (list, tuple)) else v)
    return as_list(a) == as_list(b)


def derive_setting(cfg: dict, key: str, value: Any, setting: str, source: str) -> None:
    """Fills ``cfg[key]`` (the config setting called ``setting``) with ``value`` derived from
    ``source`` when absent; refuses a given value that differs."""
    given = cfg.get(key)
    if given is None:
        cfg[key] = value
    elif not _same(given, value):
        raise ValueError(f'{setting}={given!r} does not match {source} = {value!r}: drop '
                         f'{setting} (it is derived from the backbone) or make the two agree')


class BackboneGeometry(NamedTuple):
    """What a BiXT backbone's outputs look like: ``num_outs`` maps of ``width`` channels at the
    token ``stride``; ``source`` names the setting they come from, for messages."""
    width: int
    stride: int
    num_outs: int
    source: str


def backbone_geometry(backbone_cfg: dict) -> Optional[BackboneGeometry]:
    """The output geometry of a ``BiXTBackbone`` config, read off its ``arch`` and ``out_indices``
    (the class defaults where the config leaves them out) without building it; None for other
    backbones."""
    from .backbones import BiXTBackbone
    kind = backbone_cfg.get('type')
    cls = kind if isinstance(kind, type) else MODELS.get(kind)
    if not (isinstance(cls, type) and issubclass(cls, BiXTBackbone)):
        return None
    defaults = inspect.signature(cls.__init__).parameters
    arch_setting = backbone_cfg.get('arch', defaults['arch'].default)
    out_indices = backbone_cfg.get('out_indices', defaults['out_indices'].default)
    arch, _ = resolve_arch(arch_setting)
    return BackboneGeometry(arch.embed_dims, arch.stride, len(out_indices),
                            f'model.backbone.arch={arch_setting!r}')
