from .bixt import BiXTBackbone
from .bixt_point import PointBiXTBackbone

__all__ = ['BiXTBackbone', 'PointBiXTBackbone']
