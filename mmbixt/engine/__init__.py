"""mmbixt engine (registered on import)."""
from .layer_decay import BiXTLayerDecayOptimizerConstructor, bixt_layer_id

__all__ = ['BiXTLayerDecayOptimizerConstructor', 'bixt_layer_id']
