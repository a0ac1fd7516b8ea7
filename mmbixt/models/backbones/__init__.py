from .bixt import BiXTBackbone

__all__ = ['BiXTBackbone']
