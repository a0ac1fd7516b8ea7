"""The released BiXT architectures and how to read a variant from a model name."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional, Union


@dataclass(frozen=True)
class BiXTArch:
    """Hyper-parameters of a BiXT model.

    ``num_layers`` counts the bi-directional layers; released classifiers add one latent-only layer
    after them (``depth = num_layers + 1``).
    """
    embed_dims: int = 192
    num_heads: int = 6
    num_latents: int = 64
    num_layers: int = 11
    tokenizer: str = 'linear'
    patch_size: int = 16
    stride: int = 16
    layer_scale: bool = False
    img_size: int = 224

    @property
    def depth(self) -> int:
        return self.num_layers + 1


def _released(depth: int, tokenizer: str, size: int, img_size: int = 224, embed_dims: int = 192,
              num_heads: int = 6, layer_scale: bool = False) -> BiXTArch:
    stride = {'p16': 16, 'p16s8': 8, 'p16s4': 4, 'p8': 8}[size]
    patch_size = 8 if size == 'p8' else 16
    return BiXTArch(embed_dims, num_heads, 64, depth - 1, tokenizer, patch_size, stride,
                    layer_scale, img_size)


RELEASED_ARCHS: dict[str, BiXTArch] = {
    'bixt_ti_l64_p16': _released(12, 'linear', 'p16'),
    'bixt_ti_l64_p16s8': _released(12, 'linear', 'p16s8'),
    'bixt_ti_l64_p16s4': _released(12, 'linear', 'p16s4'),
    'bixt_ti_l64_p16_ft384': _released(12, 'linear', 'p16', 384),
    'bixt_ti_l64_p16s8_ft384': _released(12, 'linear', 'p16s8', 384),
    'bixt_ti_l64_p16s4_ft384': _released(12, 'linear', 'p16s4', 384),
    'bixt_conv_ti_l64_p16': _released(12, 'conv', 'p16'),
    'bixt_ed256_l64_p16': _released(12, 'linear', 'p16', embed_dims=256, num_heads=8),
    'bixt_ed256LS_l64_p16s8': _released(12, 'linear', 'p16s8', embed_dims=256, num_heads=8,
                                        layer_scale=True),
    'bixt_ed256LS_l64_p16s8_ft384': _released(12, 'linear', 'p16s8', 384, embed_dims=256,
                                              num_heads=8, layer_scale=True),
    'bixt_ti_l64_d13_p16': _released(13, 'linear', 'p16'),
    'bixt_ti_l64_d13_p16s8': _released(13, 'linear', 'p16s8'),
    'bixt_ti_l64_d13_p16s4': _released(13, 'linear', 'p16s4'),
    'bixt_ti_l64_d13_p16_ft384': _released(13, 'linear', 'p16', 384),
    'bixt_ti_l64_d13_p16s8_ft384': _released(13, 'linear', 'p16s8', 384),
    'bixt_conv_ti_l64_d13_p16': _released(13, 'conv', 'p16'),
    'bixt_conv_ti_l64_d13_p8': _released(13, 'conv', 'p8'),
}

# The original code registers the conv models as ``bixt_ti_cnv_l64_*``.
ARCH_ALIASES: dict[str, str] = {
    name.replace('bixt_conv_ti_', 'bixt_ti_cnv_'): name
    for name in RELEASED_ARCHS if name.startswith('bixt_conv_ti_')
}

# The published ImageNet-1k top-1 / top-5 accuracies (%).
PUBLISHED_ACCURACY: dict[str, tuple[float, float]] = {
    'bixt_ti_l64_p16': (80.10, 94.74), 'bixt_ti_l64_p16s8': (81.88, 95.43),
    'bixt_ti_l64_p16s4': (82.70, 95.91), 'bixt_ti_l64_p16_ft384': (81.85, 95.68),
    'bixt_ti_l64_p16s8_ft384': (82.77, 96.04), 'bixt_ti_l64_p16s4_ft384': (83.15, 96.18),
    'bixt_conv_ti_l64_p16': (81.00, 95.18), 'bixt_ed256_l64_p16': (81.74, 95.37),
    'bixt_ed256LS_l64_p16s8': (83.24, 96.17), 'bixt_ed256LS_l64_p16s8_ft384': (83.89, 96.58),
    'bixt_ti_l64_d13_p16': (80.44, 94.90), 'bixt_ti_l64_d13_p16s8': (82.44, 95.82),
    'bixt_ti_l64_d13_p16s4': (83.04, 96.18), 'bixt_ti_l64_d13_p16_ft384': (82.15, 95.72),
    'bixt_ti_l64_d13_p16s8_ft384': (83.06, 96.27), 'bixt_conv_ti_l64_d13_p16': (80.95, 95.05),
    'bixt_conv_ti_l64_d13_p8': (82.47, 95.68),
}

ARCH_DICT_KEYS = {'embed_dims', 'num_heads', 'num_latents', 'num_layers', 'tokenizer',
                  'patch_size', 'stride', 'layer_scale'}


def canonical_name(name: str) -> str:
    return ARCH_ALIASES.get(name, name)


def get_arch(name: str) -> BiXTArch:
    """The released architecture called ``name`` (either spelling of the conv models)."""
    key = canonical_name(name)
    if key not in RELEASED_ARCHS:
        known = ', '.join(sorted(RELEASED_ARCHS) + sorted(ARCH_ALIASES))
        raise KeyError(f'unknown BiXT arch {name!r}; known: {known}')
    return RELEASED_ARCHS[key]


ArchSetting = Union[str, dict, BiXTArch]


def resolve_arch(arch: ArchSetting) -> tuple[BiXTArch, Optional[str]]:
    """An ``arch`` setting (a released name or a dict of ``ARCH_DICT_KEYS``) -> (arch, name or None)."""
    if isinstance(arch, BiXTArch):
        return arch, None
    if isinstance(arch, str):
        return get_arch(arch), canonical_name(arch)
    if isinstance(arch, dict):
        unknown = set(arch) - ARCH_DICT_KEYS
        if unknown:
            raise KeyError(f'unknown arch keys {sorted(unknown)}; allowed: {sorted(ARCH_DICT_KEYS)}')
        fields = dict(arch)
        if 'patch_size' in fields and 'stride' not in fields:
            fields['stride'] = fields['patch_size']
        return replace(BiXTArch(), **fields), None
    raise TypeError(f'arch must be a released name or a dict, got {type(arch).__name__}')


_VARIANT = re.compile(r'(?:^|_)p(\d+)(?:s(\d+))?(?:_|$)')


def variant_of_name(name: str) -> Optional[tuple[str, int]]:
    """``(tokenizer, stride)`` read off a model name such as ``bixt_ti_l64_d13_p16s8`` or
    ``bixt_ti_cnv_l64_p16``; None when the name does not say."""
    match = _VARIANT.search(name)
    if match is None:
        return None
    tokenizer = 'conv' if re.search(r'(?:^|_)(conv|cnv)(?:_|$)', name) else 'linear'
    return tokenizer, int(match.group(2) or match.group(1))
