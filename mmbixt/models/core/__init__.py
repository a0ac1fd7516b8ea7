"""The BiXT core shared by every mmbixt model."""
from .layers import (BiCrossAttention, BiXTCore, BiXTLayer, CrossAttentionBlock, DropPath,
                     LatentCrossAttention, LatentSelfAttentionBlock, LayerScale, Mlp,
                     SelfAttention, layer_norm)
from .encoder import IMAGE_TOKENIZER, BiXTEncoder, pad_to_multiple, resolve_out_indices
from .tokenizers import (ConvTokenizer, FourierPositionalEncoding2d, LinearTokenizer,
                         build_tokenizer, embed_image, fourier_features_2d)

__all__ = ['BiXTEncoder', 'IMAGE_TOKENIZER', 'pad_to_multiple', 'resolve_out_indices',
           'BiCrossAttention', 'BiXTCore', 'BiXTLayer', 'CrossAttentionBlock', 'DropPath',
           'LatentCrossAttention', 'LatentSelfAttentionBlock', 'LayerScale', 'Mlp',
           'SelfAttention', 'layer_norm', 'ConvTokenizer', 'FourierPositionalEncoding2d',
           'LinearTokenizer', 'build_tokenizer', 'embed_image', 'fourier_features_2d']
