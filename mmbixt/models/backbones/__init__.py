from .bixt import BiXTBackbone
from .bixt_point import PointBiXTBackbone  # noqa: F401

__all__ = ['BiXTBackbone']
