"""mmbixt heads (registered on import)."""
from .partseg_head import PartSegHead, interpolate_features

__all__ = ['PartSegHead', 'interpolate_features']
