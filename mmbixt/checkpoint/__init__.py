"""Safe reading and checked loading of BiXT checkpoints: ``normalise_checkpoint`` turns any
supported file into a plain state dict, ``apply_state_dict`` applies it under a route's policy."""
from .loading import (LoadPolicy, LoadReport, PlainCheckpoint, apply_state_dict, describe,
                      normalise_checkpoint, strip_wrappers, to_core_layout)
from .reader import CheckpointError, check_finite, non_finite_tensors, read_checkpoint
from .sources import read_from
from .weights import (CLASSIFIER_ONLY, FIXED_POS_BUFFER, IMAGE_TOKENIZER_PREFIXES, BiXTWeights,
                      load_weights)

__all__ = ['CheckpointError', 'read_checkpoint', 'check_finite', 'non_finite_tensors',
           'normalise_checkpoint', 'apply_state_dict', 'PlainCheckpoint', 'LoadPolicy',
           'BiXTWeights', 'LoadReport', 'load_weights', 'describe', 'CLASSIFIER_ONLY',
           'FIXED_POS_BUFFER', 'IMAGE_TOKENIZER_PREFIXES', 'read_from',
           'strip_wrappers', 'to_core_layout']
