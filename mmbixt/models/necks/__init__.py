"""mmbixt necks (registered on import)."""
from .feature_pyramid import BiXTFeaturePyramid

__all__ = ['BiXTFeaturePyramid']
