"""mmbixt engine (registered on import)."""
from .amp import CpuBf16OptimWrapper, enable_amp_training  # noqa: F401  (registers)
from .consistency import ConfigConsistencyHook
from .layer_decay import BiXTLayerDecayOptimizerConstructor, bixt_layer_id
from .non_finite import NonFiniteLossHook, NonFiniteTrainingError  # noqa: F401  (registers)
from .runner import BiXTRunner, IterationSeedHook, build_runner  # noqa: F401  (registers)
from .checkpoint_hook import KeepCompleteCheckpointHook  # noqa: F401  (registers)
from .work_dir import WorkDirError, WorkDirLock  # noqa: F401

__all__ = ['BiXTLayerDecayOptimizerConstructor', 'ConfigConsistencyHook', 'bixt_layer_id']
