"""Settings a model derives from its backbone instead of restating them in the config.

A derived setting left out of a config (or ``None``) is filled in; one given that disagrees is
refused at build time with a message naming both settings.
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping, NamedTuple, Optional

from mmengine.registry import Registry
from mmseg.registry import MODELS

from ..archs import resolve_arch


def config_class(cfg: Optional[Mapping], registry: Registry = MODELS) -> Optional[type]:
    """The class a config's ``type`` names: the class itself, or the one ``registry`` finds for
    the name (a scoped name such as ``'mmseg.BiXTFeaturePyramid'`` too); None when it names no
    class. Configs are compared by this class (``issubclass``), never by the name's text."""
    kind = (cfg or {}).get('type')
    found = kind if isinstance(kind, type) else registry.get(kind) if isinstance(kind, str) else None
    return found if isinstance(found, type) else None


def is_config_of(cfg: Optional[Mapping], cls: type, registry: Registry = MODELS) -> bool:
    """Whether ``cfg`` builds a ``cls`` (or a subclass of it)."""
    found = config_class(cfg, registry)
    return found is not None and issubclass(found, cls)


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
    cls = config_class(backbone_cfg)
    if cls is None or not issubclass(cls, BiXTBackbone):
        return None
    defaults = inspect.signature(cls.__init__).parameters
    arch_setting = backbone_cfg.get('arch', defaults['arch'].default)
    out_indices = backbone_cfg.get('out_indices', defaults['out_indices'].default)
    arch, _ = resolve_arch(arch_setting)
    return BackboneGeometry(arch.embed_dims, arch.stride, len(out_indices),
                            f'model.backbone.arch={arch_setting!r}')
