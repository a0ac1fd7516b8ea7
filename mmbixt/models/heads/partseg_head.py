"""``PartSegHead``: per-point part logits from BiXT point tokens, conditioned on the object category."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor, nn

from ...datasets.shapenet_part import CATEGORY_PARTS, NUM_PARTS
from ..core.point_features import PointBackboneOutput, point_mlp
from ..core.point_geometry import gather_points, knn
from ..quiet_init import QuietInitWeights

# The label of padding points in a batch of clouds of different sizes: no loss, no metric.
IGNORE_INDEX = -100


def interpolate_features(dst_xyz: Tensor, src_xyz: Tensor, src_feats: Tensor, k: int = 3,
                         eps: float = 1e-8, src_mask: Optional[Tensor] = None) -> Tensor:
    """Features ``[B, N, C]`` at ``dst_xyz [B, N, 3]`` from ``src_feats [B, T, C]`` at ``src_xyz``:
    inverse-(squared-)distance weighted mean of the ``k`` nearest sources (PointNet++ style), and
    exactly the source's feature at a point where a source sits (so per-point tokens pass through
    unchanged, whatever their order). Sources outside ``src_mask [B, T]`` are never used."""
    dist, index = knn(dst_xyz, src_xyz, min(k, src_xyz.shape[1]), ref_mask=src_mask)
    weights = 1.0 / (dist + eps)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    # The nearest distance recomputed exactly (cdist may round a coincidence to a tiny distance).
    nearest = (dst_xyz - gather_points(src_xyz, index[..., 0])).square().sum(dim=-1, keepdim=True)
    first_only = torch.zeros_like(weights)
    first_only[..., 0] = 1.0
    weights = torch.where(nearest == 0, first_only, weights)
    return (gather_points(src_feats, index) * weights.unsqueeze(-1)).sum(dim=2)


def global_pool(tokens: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Max and mean of ``tokens [B, T, C]`` over each shape's valid tokens (``mask [B, T]``)."""
    if mask is None:
        return tokens.max(dim=1).values, tokens.mean(dim=1)
    valid = mask.unsqueeze(-1)
    largest = tokens.masked_fill(~valid, float('-inf')).max(dim=1).values
    mean = tokens.masked_fill(~valid, 0.0).sum(dim=1) / valid.sum(dim=1).to(tokens.dtype)
    return largest, mean


@MODELS.register_module()
class PartSegHead(QuietInitWeights, BaseModule):
    """Part segmentation from the tokens of several BiXT layers.

    The tokens of the chosen layers are concatenated and fused, then carried to every point by
    3-NN inverse-distance interpolation from where the tokens sit (``feats.xyz``), exact at the
    token positions: grouped tokens spread to their neighbourhoods, per-point tokens (in whatever
    order the tokenizer emits them) land on their own points. Each point then sums its fused
    feature, an embedding of its own input channels and a per-shape context (the global max/mean of
    the fused tokens and an embedding of the object category); an MLP gives logits over all parts. At prediction time
    parts of other categories are masked out.

    Args:
        in_channels: token width D.
        num_inputs: how many token sets the backbone returns (its ``out_indices``).
        point_channels: input channels per point (3 or 6).
        channels: width of the fused features.
        category_parts: global part ids of each category (ShapeNetPart's 16 by default).
        num_classes: number of parts (50).
        category_dims: width of the category embedding.
        dropout: before the last layer.
        loss_decode: an mmseg loss config applied to ``[B, parts, N]`` logits.
    """

    def __init__(self, in_channels: int = 192, num_inputs: int = 3, point_channels: int = 6,
                 channels: int = 256, category_parts: Optional[Sequence[Sequence[int]]] = None,
                 num_classes: int = NUM_PARTS, category_dims: int = 64, dropout: float = 0.5,
                 loss_decode: Optional[dict] = None, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        category_parts = category_parts or CATEGORY_PARTS
        self.num_classes = num_classes
        self.fuse = point_mlp((in_channels * num_inputs, channels, channels))
        self.point_embed = point_mlp((point_channels, 64, channels))
        self.category_embed = nn.Embedding(len(category_parts), category_dims)
        # Per-shape context (global max/mean of the tokens, category), projected once per shape and
        # added to every point: the same as concatenating it, without N copies.
        self.shape_proj = nn.Linear(2 * channels + category_dims, channels)
        self.classifier = nn.Sequential(nn.LayerNorm(channels), nn.GELU(),
                                        point_mlp((channels, channels // 2)),
                                        nn.LayerNorm(channels // 2), nn.GELU(),
                                        nn.Dropout(dropout), nn.Linear(channels // 2, num_classes))
        mask = torch.zeros(len(category_parts), num_classes, dtype=torch.bool)
        for category, parts in enumerate(category_parts):
            mask[category, list(parts)] = True
        self.register_buffer('part_mask', mask, persistent=False)
        self.loss_decode = MODELS.build(loss_decode or dict(type='CrossEntropyLoss',
                                                            loss_weight=1.0))

    def forward(self, feats: PointBackboneOutput, points: Tensor, categories: Tensor) -> Tensor:
        """Logits ``[B, N, num_classes]`` for ``points [B, N, C]`` of objects ``categories [B]``."""
        tokens = self.fuse(torch.cat(feats.feats, dim=-1))
        global_feat = torch.cat(global_pool(tokens, feats.mask), dim=-1)
        tokens = interpolate_features(points[..., :3], feats.xyz, tokens, src_mask=feats.mask)
        per_shape = self.shape_proj(torch.cat([global_feat, self.category_embed(categories)], -1))
        return self.classifier(tokens + self.point_embed(points) + per_shape.unsqueeze(1))

    def loss(self, logits: Tensor, gt_parts: Tensor) -> dict[str, Tensor]:
        """The loss of ``logits [B, N, parts]`` against ``gt_parts [B, N]``; points labelled
        ``IGNORE_INDEX`` (padding) count in neither the sum nor the mean."""
        real = gt_parts != IGNORE_INDEX
        if bool(real.all()):
            return {'loss_partseg': self.loss_decode(logits.transpose(1, 2), gt_parts)}
        per_point = self.loss_decode(logits.transpose(1, 2), gt_parts, ignore_index=IGNORE_INDEX,
                                     reduction_override='none')
        return {'loss_partseg': per_point.sum() / real.sum().clamp(min=1)}

    def predict(self, logits: Tensor, categories: Tensor) -> Tensor:
        """Part ids ``[B, N]``, each the best part of its shape's own category."""
        allowed = self.part_mask[categories].unsqueeze(1)
        return logits.masked_fill(~allowed, float('-inf')).argmax(dim=-1)
