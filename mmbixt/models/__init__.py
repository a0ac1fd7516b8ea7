"""mmbixt models; importing this package registers them in mmseg's (and timm's) registries."""
from . import backbones, classifiers, heads, necks, segmentors  # noqa: F401
from .backbones import BiXTBackbone

__all__ = ['BiXTBackbone']
