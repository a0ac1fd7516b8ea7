"""The BiXT core shared by every mmbixt model."""
from .layers import (BiCrossAttention, BiXTCore, BiXTLayer, CrossAttentionBlock, DropPath,
                     ExecutionSettings, LatentCrossAttention, LatentSelfAttentionBlock, LayerScale,
                     Mlp, SelfAttention, layer_norm)
from .embeddings import Embedded, ImageEmbedding, PointEmbedding, pad_to_multiple
from .encoder import BiXTEncoder, build_core, take_indices
from .tokenizers import (ConvTokenizer, FourierPositionalEncoding2d, LinearTokenizer,
                         build_tokenizer, fourier_features_2d)

__all__ = ['BiXTEncoder', 'build_core', 'take_indices', 'Embedded', 'ImageEmbedding',
           'PointEmbedding', 'pad_to_multiple', 'BiCrossAttention', 'BiXTCore', 'BiXTLayer',
           'CrossAttentionBlock', 'DropPath', 'ExecutionSettings', 'LatentCrossAttention',
           'LatentSelfAttentionBlock', 'LayerScale', 'Mlp', 'SelfAttention', 'layer_norm',
           'ConvTokenizer', 'FourierPositionalEncoding2d', 'LinearTokenizer', 'build_tokenizer',
           'fourier_features_2d']
