"""mmbixt engine (registered on import)."""
from .consistency import ConfigConsistencyHook
from .layer_decay import BiXTLayerDecayOptimizerConstructor, bixt_layer_id
from .runner import BiXTRunner, IterationSeedHook, build_runner  # noqa: F401  (registers)

__all__ = ['BiXTLayerDecayOptimizerConstructor', 'ConfigConsistencyHook', 'bixt_layer_id']
