"""``BiXTBackbone``: BiXT as an MMSegmentation backbone."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...archs import BiXTArch, resolve_arch
from ...checkpoint import CLASSIFIER_ONLY, FIXED_POS_BUFFER, BiXTWeights
from ..core import (BiXTCore, FourierPositionalEncoding2d, build_tokenizer, embed_image,
                    layer_norm)
from .base import BiXTPretrainedBackbone


def pad_to_multiple(img: Tensor, multiple: int) -> Tensor:
    """Zero-pads the bottom and right of ``img`` so both sides are multiples of ``multiple``."""
    pad_h, pad_w = -img.shape[-2] % multiple, -img.shape[-1] % multiple
    return F.pad(img, (0, pad_w, 0, pad_h)) if pad_h or pad_w else img


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
        out_indices: layer indices (negative counts from the end) whose tokens are returned.
        out_norm: a LayerNorm on each output; ``False`` returns the refined tokens as they are.
        drop_path_rate: stochastic depth of the cross-attention blocks (and of the latent
            self-attention, unless ``self_drop_path_rate`` is given).
        self_drop_path_rate: stochastic depth of the latent self-attention blocks.
        with_latents: each output becomes ``[map, latents]`` with latents ``[B, L, D]`` (as mmseg's
            ViT does with ``output_cls_token``).
        frozen_stages: -1 trains everything; 0 freezes the tokenizer, positional encoding and
            latents; ``k`` > 0 also freezes layers ``0..k-1``.
        norm_eval: keep the BatchNorms of the conv tokenizer in eval mode while training.
        with_cp: gradient checkpointing of each layer (saves memory, costs a recompute).
        token_chunk_size: forwards over more tokens than this run the token stream in chunks of
            this size (the same result): in training recomputed in backward (much less memory at
            stride 8 and 4), in inference for cache locality (faster on long sequences); None
            disables it.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH, use_ema=False)`` loads a released zip as
            downloaded, a ``.pth.tar``/``.pth``/``.pt``, a file from ``tools/convert_checkpoint.py``
            or an mmseg checkpoint of this backbone; anything else follows mmengine's init_cfg.
    """
    # The classifier parts and the fixed 224px positional buffer of released files go unused.
    dropped_prefixes = CLASSIFIER_ONLY + (FIXED_POS_BUFFER,)
    new_prefixes = ('out_norms.',)

    def __init__(self, arch: Union[str, dict] = 'bixt_ti_l64_d13_p16', in_channels: int = 3,
                 out_indices: Sequence[int] = (3, 5, 7, 11), out_norm: bool = True,
                 drop_path_rate: float = 0.0, self_drop_path_rate: Optional[float] = None,
                 with_latents: bool = False, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, token_chunk_size: Optional[int] = 4096,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch, self.arch_name = resolve_arch(arch)
        arch_: BiXTArch = self.arch
        self.embed_dims = arch_.embed_dims
        self.num_layers = arch_.num_layers
        self.stride = arch_.stride
        self.out_indices = self._check_out_indices(out_indices)
        self.with_latents = with_latents
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        self.patch_embed = build_tokenizer(arch_.tokenizer, in_channels, arch_.embed_dims,
                                           arch_.patch_size, arch_.stride)
        self.fourier_pos_encode = FourierPositionalEncoding2d(arch_.embed_dims)
        self.core = BiXTCore.from_arch(
            arch_, cross_drop_path_rate=drop_path_rate,
            self_drop_path_rate=drop_path_rate if self_drop_path_rate is None else self_drop_path_rate,
            with_cp=with_cp, token_chunk_size=token_chunk_size)
        self.out_norms = nn.ModuleList(
            layer_norm(arch_.embed_dims) if out_norm else nn.Identity() for _ in self.out_indices)
        self.core.freeze_unreachable(max(self.out_indices), latents_used=with_latents)
        self._freeze_stages()

    def _check_out_indices(self, out_indices: Union[int, Sequence[int]]) -> tuple[int, ...]:
        indices = (out_indices,) if isinstance(out_indices, int) else tuple(out_indices)
        resolved = []
        for index in indices:
            if not -self.num_layers <= index < self.num_layers:
                raise ValueError(f'out_indices {indices} out of range for {self.num_layers} layers')
            resolved.append(index % self.num_layers)
        if not resolved:
            raise ValueError('out_indices must name at least one layer')
        return tuple(resolved)

    @property
    def arch_description(self) -> str:
        return self.arch_name or (f'a {self.arch.tokenizer} stride-{self.stride} BiXT with '
                                  f'{self.num_layers} layers')

    def check_weights(self, weights: BiXTWeights) -> None:
        """Also refuses a checkpoint of another tokeniser or stride (by the name it stores)."""
        weights.check_variant(self.arch.tokenizer, self.stride, self.arch_description)
        super().check_weights(weights)

    # ---------------------------------------------------------------- forward
    def embed(self, img: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Pads, tokenises and adds the positional encoding: ``[B, N, D]`` and the grid ``(h, w)``."""
        return embed_image(self.patch_embed, self.fourier_pos_encode,
                           pad_to_multiple(img, self.stride))

    def forward(self, img: Tensor) -> tuple:
        tokens, (height, width) = self.embed(img)
        states = self.core.forward_until(tokens, self.out_indices)
        outs = []
        for norm, index in zip(self.out_norms, self.out_indices):
            latents, tokens = states[index]
            out = norm(tokens).transpose(1, 2).reshape(-1, self.embed_dims, height, width)
            outs.append([out, latents] if self.with_latents else out)
        return tuple(outs)

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
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self
