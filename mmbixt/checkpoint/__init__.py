"""Safe reading and checked loading of BiXT checkpoints."""
from .reader import CheckpointError, read_checkpoint
from .runner_loading import install_safe_local_loader
from .weights import (CLASSIFIER_ONLY, FIXED_POS_BUFFER, BiXTWeights, LoadReport, describe,
                      load_weights, to_core_layout)

__all__ = ['CheckpointError', 'read_checkpoint', 'BiXTWeights', 'LoadReport', 'load_weights',
           'describe', 'CLASSIFIER_ONLY', 'FIXED_POS_BUFFER', 'install_safe_local_loader', 'to_core_layout']
