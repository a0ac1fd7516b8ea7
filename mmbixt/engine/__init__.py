"""mmbixt engine (registered on import)."""
from .layer_decay import BiXTLayerDecayOptimizerConstructor, bixt_layer_id
from .non_finite import NonFiniteLossHook, NonFiniteTrainingError  # noqa: F401  (registers)
from .runner import BiXTRunner, IterationSeedHook, build_runner  # noqa: F401  (registers)
from .work_dir import WorkDirError  # noqa: F401

__all__ = ['BiXTLayerDecayOptimizerConstructor', 'bixt_layer_id']
