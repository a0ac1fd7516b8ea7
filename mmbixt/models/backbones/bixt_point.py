"""``PointBiXTBackbone``: the BiXT core on point clouds (per-point or grouped tokens).

The tokens come from a point tokenizer instead of a patch embedding; everything after it is the same
``BiXTEncoder`` core (built from the same ``arch``) as the image backbone, so the core of an image
checkpoint can initialise it.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

from mmseg.registry import MODELS
from torch import Tensor

from ...archs import resolve_arch
from ...checkpoint import IMAGE_TOKENIZER_PREFIXES
from ..core import PointEmbedding
from ..core.layers import ExecutionLike
from ..core.point_features import PointBackboneOutput
from ..core.point_tokenizers import build_point_tokenizer
from .base import BiXTPretrainedBackbone


# ---------------------------------------------------------------- backbone
@MODELS.register_module()
class PointBiXTBackbone(BiXTPretrainedBackbone):
    """BiXT on point clouds: a point tokenizer feeding the same ``BiXTEncoder`` as the images.

    Input ``[B, N, C]`` points (xyz first, then optional normals). Returns a ``PointBackboneOutput``:
    the refined tokens of the layers in ``out_indices``, where the tokens sit, and (with
    ``with_latents``) the latents.

    Args:
        arch: as for ``BiXTBackbone``: a released name or a dict of ``embed_dims, num_heads,
            num_latents, num_layers, layer_scale`` (Ti: 192, 6, 64, 12); its image tokenizer
            settings are unused.
        in_channels: 3 (xyz) or 6 (xyz + normals).
        tokenizer: ``dict(type='per_point', hidden_dims=128)`` (every point a token) or
            ``dict(type='grouped', num_groups=128, group_size=32)`` (FPS + kNN + PointNet).
        out_indices: layers whose tokens are returned (negative counts from the end), in the
            order given.
        out_norm: a LayerNorm on each returned token set.
        with_latents: also return the latents after the last returned layer (then trained).
        drop_path_rate / self_drop_path_rate / execution: as for ``BiXTBackbone``.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH, strict=True)`` initialises latents
            and layers from an image BiXT checkpoint (a d13 zip as downloaded, for 12 layers); the
            image tokenizer and positional encoding are dropped, the point tokenizer and output
            norms stay new. Width, latents, heads, LayerScale and depth must match the file.
    """
    # Cross-modal initialisation: the core of an image checkpoint; its tokenizer goes unused.
    dropped_prefixes = (BiXTPretrainedBackbone.dropped_prefixes + IMAGE_TOKENIZER_PREFIXES)
    new_prefixes = ('tokenizer.', 'out_norms.')

    def __init__(self, arch: Union[str, dict] = 'bixt_ti_l64_d13_p16', in_channels: int = 6,
                 tokenizer: Optional[dict] = None, out_indices: Sequence[int] = (3, 7, 11),
                 out_norm: bool = True, with_latents: bool = False, drop_path_rate: float = 0.0,
                 self_drop_path_rate: Optional[float] = None, execution: ExecutionLike = None,
                 init_cfg: Optional[dict] = None):
        embed_dims = resolve_arch(arch)[0].embed_dims
        embedding = PointEmbedding(build_point_tokenizer(tokenizer or dict(type='grouped'),
                                                         in_channels, embed_dims))
        super().__init__(arch, embedding, out_indices, out_norm, with_latents, init_cfg,
                         drop_path_rate=drop_path_rate, self_drop_path_rate=self_drop_path_rate,
                         execution=execution)
        self.in_channels = in_channels

    def forward(self, points: Tensor, point_mask: Optional[Tensor] = None) -> PointBackboneOutput:
        """``points [B, N, C]``; ``point_mask [B, N]`` (bool, True = a real point, padding at the
        end of each row) for a batch of clouds of different sizes: each cloud then gets what it
        gets alone (tokens of padding are invalid: the latents ignore them, their features are
        zeros)."""
        if points.shape[-1] != self.in_channels:
            raise ValueError(f'expected points with {self.in_channels} channels, got '
                             f'{tuple(points.shape)}; set in_channels (3: xyz, 6: xyz + normals)')
        embedded = self.embed(points, point_mask)
        latents, feats = self.intermediates_of(embedded, self.out_indices, norm=True,
                                               stop_early=True, output_fmt='NLC')
        return PointBackboneOutput(tuple(feats), embedded.positions,
                                   latents if self.with_latents else None, embedded.token_mask)
