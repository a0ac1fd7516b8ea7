"""Safe reading and checked loading of BiXT checkpoints."""
from .reader import CheckpointError, check_finite, non_finite_tensors, read_checkpoint
from .runner_loading import install_safe_local_loader
from .weights import (CLASSIFIER_ONLY, FIXED_POS_BUFFER, IMAGE_TOKENIZER_PREFIXES, BiXTWeights,
                      LoadReport, describe, load_weights, remap_released, to_core_layout)

__all__ = ['CheckpointError', 'read_checkpoint', 'check_finite', 'non_finite_tensors',
           'BiXTWeights', 'LoadReport', 'load_weights', 'describe', 'CLASSIFIER_ONLY',
           'FIXED_POS_BUFFER', 'IMAGE_TOKENIZER_PREFIXES', 'install_safe_local_loader',
           'remap_released', 'to_core_layout']
