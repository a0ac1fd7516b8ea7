"""Where a BiXT backbone's latents look: attention maps recorded through public hooks, and the
latents whose maps differ most from each other."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn


class LayerAttention(NamedTuple):
    """Head-averaged attention of one layer on the image's token grid, ``[L, h, w]`` each."""
    latent_to_tokens: Tensor  # where each latent looks: sums to 1 over the tokens
    token_to_latents: Tensor  # which latents each token reads: sums to 1 over the latents


class AttentionRecorder:
    """Captures the inputs of ``core.blocks[i].cross_attention_latents_token`` through forward
    pre-hooks and the token grid from the tokenizer, then turns them into attention maps with the
    block's own pre-norms and ``BiCrossAttention.attention_maps`` (the core stays untouched).

    The hook sits on the block, not on its ``attn``: the block's fast path calls the attention's
    parts directly, so ``attn`` itself is never called."""

    def __init__(self, backbone: nn.Module, layers: Sequence[int]):
        self.inputs: dict[int, tuple] = {}
        self.grid: tuple[int, int] = (0, 0)
        self.blocks = {i: backbone.core.blocks[i].cross_attention_latents_token for i in layers}
        self.handles = [module.register_forward_pre_hook(self._keep(i))
                        for i, module in self.blocks.items()]
        self.handles.append(backbone.patch_embed.register_forward_hook(self._keep_grid))

    def _keep(self, layer: int):
        def hook(_module, args):
            self.inputs[layer] = tuple(a.detach() for a in args[:2])  # (latents, tokens)
        return hook

    def _keep_grid(self, _module, _args, output):
        self.grid = tuple(output.shape[-2:])

    @torch.no_grad()
    def maps(self, layer: int) -> tuple[Tensor, Tensor]:
        """Head-averaged (latent -> tokens, token -> latents) maps ``[L, h, w]`` of sample 0, in
        float32 whatever precision the forward ran in (autocast records half-precision inputs)."""
        block = self.blocks[layer]
        dtype = next(block.parameters()).dtype
        latents, tokens = (a.to(dtype) for a in self.inputs[layer])
        to_tokens, to_latents = block.attn.attention_maps(block.norm1_lat(latents),
                                                          block.norm1_pat(tokens))
        shape = (-1,) + self.grid
        return (to_tokens[0].float().mean(0).reshape(shape),
                to_latents[0].float().mean(0).reshape(shape))

    def over_image(self, layer: int, covered: tuple[int, int]) -> LayerAttention:
        """The maps of ``layer`` on the tokens that hold the image: ``covered`` is how many token
        rows and columns the (resized) image spans, the rest covers padding."""
        return LayerAttention(*(m[:, :covered[0], :covered[1]] for m in self.maps(layer)))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def relative_attention(latent_to_tokens: Tensor) -> Tensor:
    """``log2`` of each latent's attention over the mean attention of all latents, ``[L, H, W]``:
    +1 where a latent looks twice as much as the latents do on average. Deep layers' latents
    share most of their attention; this keeps what sets each one apart."""
    mean = latent_to_tokens.mean(0, keepdim=True)
    return torch.log2(latent_to_tokens.clamp_min(1e-12) / mean.clamp_min(1e-12))


def most_distinct(maps: Tensor, count: int) -> list[int]:
    """Farthest-point selection over ``[L, ...]`` maps: first the map farthest from zero (for
    :func:`relative_attention`, the latent most unlike the mean), then each time the map farthest
    from all those chosen (Euclidean). Returns ``min(count, L)`` indices."""
    flat = maps.flatten(1).double()
    closest = flat.norm(dim=1)  # distance to the nearest chosen map, the origin counting as one
    chosen: list[int] = []
    for _ in range(min(count, len(flat))):
        pick = int(closest.argmax())
        chosen.append(pick)
        closest = torch.minimum(closest, (flat - flat[pick]).norm(dim=1))
        closest[chosen] = -1.0
    return chosen
