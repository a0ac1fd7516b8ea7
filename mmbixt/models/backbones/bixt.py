"""``BiXTBackbone``: BiXT as an MMSegmentation backbone."""
from __future__ import annotations

from typing import Optional, Sequence, Union

from mmseg.registry import MODELS
from torch import Tensor, nn

from ...checkpoint import FIXED_POS_BUFFER
from ..core import ImageEmbedding
from ..core.layers import ExecutionLike
from .base import BiXTPretrainedBackbone

__all__ = ['BiXTBackbone']

# torch's public BatchNorm classes (their common base is private), for ``norm_eval``.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@MODELS.register_module()
class BiXTBackbone(BiXTPretrainedBackbone):
    """BiXT (bi-directional cross-attention transformer) backbone for dense prediction.

    Returns the refined tokens of the layers in ``out_indices`` as ``[B, D, H/s, W/s]`` maps, where
    ``s`` is the token stride (16, 8 or 4). Inputs of any size work: they are zero-padded at the
    bottom and right to a multiple of ``s`` (the maps then cover the padded image, as in mmseg's Swin),
    and the Fourier positional encoding is computed for the actual token grid.

    Args:
        arch: a released model name (``bixt_ti_l64_d13_p16``, ...; see ``mmbixt.archs``) or a dict
            with ``embed_dims, num_heads, num_latents, num_layers, tokenizer ('linear'|'conv'),
            patch_size, stride, layer_scale``. A released name runs its bi-directional layers: 12 for
            the d13 models, 11 for the d12 classifiers.
        in_channels: input image channels.
        out_indices: layer indices (negative counts from the end) whose tokens are returned, in
            the order given (duplicates kept); an int is one layer.
        out_norm: a LayerNorm on each output; ``False`` returns the refined tokens as they are.
        drop_path_rate: stochastic depth of the cross-attention blocks (and of the latent
            self-attention, unless ``self_drop_path_rate`` is given).
        self_drop_path_rate: stochastic depth of the latent self-attention blocks.
        with_latents: each output becomes ``[map, latents]`` with latents ``[B, L, D]`` (as mmseg's
            ViT does with ``output_cls_token``).
        frozen_stages: -1 trains everything; 0 freezes the tokenizer, positional encoding and
            latents; ``k`` > 0 also freezes layers ``0..k-1``.
        norm_eval: keep the BatchNorms of the conv tokenizer in eval mode while training.
        execution: how the core runs, an ``ExecutionSettings`` or a dict of its fields:
            ``with_cp`` (gradient checkpointing of each layer: saves memory, costs a recompute),
            ``train_chunk_size`` (forwards with gradients over more tokens than this run the
            token stream in chunks of this size, recomputed in backward: same result, much less
            memory at stride 8 and 4; None disables it), ``stream_chunk_size`` (forwards without
            gradients over more tokens than this stream the token side in chunks of this size
            for cache locality; None disables it), ``fused`` (oneDNN's fused CPU inference
            kernels) and ``attention_kernel`` (the tiled CPU kernel ``'fused'``, the default, or ``'portable'``). Change
            them later with ``set_execution``.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH, use_ema=False, strict=True)`` loads a
            released zip as downloaded, a ``.pth.tar``/``.pth``/``.pt``, a file from
            ``tools/convert_checkpoint.py`` or an mmseg checkpoint of this backbone, under the
            loading policy of ``BiXTPretrainedBackbone`` (``strict=False``: log, do not refuse);
            anything else follows mmengine's init_cfg.
    """
    # The fixed 224px positional buffer of released files goes unused (computed per grid).
    dropped_prefixes = BiXTPretrainedBackbone.dropped_prefixes + (FIXED_POS_BUFFER,)

    def __init__(self, arch: Union[str, dict] = 'bixt_ti_l64_d13_p16', in_channels: int = 3,
                 out_indices: Sequence[int] = (3, 5, 7, 11), out_norm: bool = True,
                 drop_path_rate: float = 0.0, self_drop_path_rate: Optional[float] = None,
                 with_latents: bool = False, frozen_stages: int = -1, norm_eval: bool = False,
                 execution: ExecutionLike = None, init_cfg: Optional[dict] = None):
        super().__init__(arch, ImageEmbedding.from_arch(arch, in_channels),
                         out_indices, out_norm, with_latents, init_cfg,
                         drop_path_rate=drop_path_rate, self_drop_path_rate=self_drop_path_rate,
                         execution=execution)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self._freeze_stages()

    def forward(self, img: Tensor, valid_shapes: Optional[Sequence[Sequence[int]]] = None) -> tuple:
        """``valid_shapes``: each sample's ``(h, w)`` of real pixels in a padded batch (mmseg's
        ``img_shape``); each sample then gets, on its own ``ceil(h/s) x ceil(w/s)`` tokens, what it
        gets alone, and zeros elsewhere in the maps."""
        return tuple(self.forward_intermediates(img, self.out_indices, norm=True,
                                                intermediates_only=True,
                                                with_latents=self.with_latents, valid=valid_shapes))

    # ---------------------------------------------------------------- training modes
    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen: list[nn.Module] = [self.patch_embed, self.fourier_pos_encode]
        frozen += list(self.core.blocks[:self.frozen_stages])
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False
        self.core.latents.requires_grad = False

    def train(self, mode: bool = True) -> 'BiXTBackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, BATCH_NORMS):
                    module.eval()
        return self
