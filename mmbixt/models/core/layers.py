"""The BiXT core: latents and bi-directional cross-attention layers.

One implementation serves the image backbone, the point-cloud backbone and the timm classifiers.
Module and parameter names follow the released checkpoints (``blocks.i.cross_attention_latents_token``,
``blocks.i.self_attention_latents``), so released weights map onto it without renaming inside a layer.
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

LAYER_NORM_EPS = 1e-6


def layer_norm(dims: int) -> nn.LayerNorm:
    return nn.LayerNorm(dims, eps=LAYER_NORM_EPS)


def split_heads(x: Tensor, parts: int, num_heads: int) -> tuple[Tensor, ...]:
    """``[B, N, parts*A]`` -> ``parts`` tensors ``[B, heads, N, A/heads]`` (the released split order)."""
    batch, length, width = x.shape
    x = x.reshape(batch, length, parts, num_heads, width // (parts * num_heads))
    return x.permute(2, 0, 3, 1, 4).unbind(0)


def merge_heads(x: Tensor) -> Tensor:
    """``[B, heads, N, a]`` -> ``[B, N, heads*a]``."""
    batch, heads, length, head_dims = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dims)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob:.3f}'


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (``gamma`` in the released checkpoints)."""

    def __init__(self, dims: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dims,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


def layer_scale(dims: int, init_value: Optional[float]) -> nn.Module:
    return LayerScale(dims, init_value) if init_value else nn.Identity()


def drop_path(prob: float) -> nn.Module:
    return DropPath(prob) if prob > 0 else nn.Identity()


class Mlp(nn.Module):
    """Linear -> exact GELU -> Linear."""

    def __init__(self, dims: int, hidden_dims: int):
        super().__init__()
        self.fc1 = nn.Linear(dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, dims)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the latents, through PyTorch's fused attention kernel."""

    def __init__(self, dims: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dims, dims * 3)
        self.proj = nn.Linear(dims, dims)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = split_heads(self.qkv(x), 3, self.num_heads)
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))


class BiCrossAttention(nn.Module):
    """Bi-directional cross-attention: one similarity matrix, a softmax along each of its axes.

    The latents read the tokens (softmax over tokens) and the tokens read the latents (softmax over
    latents) through the same ``S = r_lat @ r_tok^T``; each side has a reference ``r`` and a value ``v``.
    """

    def __init__(self, dims: int, attn_dims: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (attn_dims // num_heads) ** -0.5
        self.rv_latents = nn.Linear(dims, attn_dims * 2)
        self.rv_patches = nn.Linear(dims, attn_dims * 2)
        self.proj_lat = nn.Linear(attn_dims, dims)
        self.proj_pat = nn.Linear(attn_dims, dims)

    def similarity(self, latents: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r_lat, v_lat = split_heads(self.rv_latents(latents), 2, self.num_heads)
        r_tok, v_tok = split_heads(self.rv_patches(tokens), 2, self.num_heads)
        return (r_lat @ r_tok.transpose(-2, -1)) * self.scale, v_lat, v_tok

    def forward(self, latents: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        sim, v_lat, v_tok = self.similarity(latents, tokens)  # sim: [B, heads, L, N]
        lat_update = sim.softmax(dim=-1) @ v_tok
        # Softmax over the latent axis, then read as [N, L] through a transposed view (no copy).
        tok_update = sim.softmax(dim=-2).transpose(-2, -1) @ v_lat
        return self.proj_lat(merge_heads(lat_update)), self.proj_pat(merge_heads(tok_update))

    @torch.no_grad()
    def attention_maps(self, latents: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Both attentions for inspection, ``[B, heads, L, N]`` each: where each latent looks
        (rows sum to 1 over tokens) and which latents each token reads (columns sum to 1)."""
        sim = self.similarity(latents, tokens)[0]
        return sim.softmax(dim=-1), sim.softmax(dim=-2)


class LatentCrossAttention(nn.Module):
    """One-sided cross-attention of the last classifier layer: only the latents are updated."""

    def __init__(self, dims: int, attn_dims: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.r_latents = nn.Linear(dims, attn_dims)
        self.rv_patches = nn.Linear(dims, attn_dims * 2)
        self.proj_lat = nn.Linear(attn_dims, dims)

    def forward(self, latents: Tensor, tokens: Tensor) -> tuple[Tensor, None]:
        (r_lat,) = split_heads(self.r_latents(latents), 1, self.num_heads)
        r_tok, v_tok = split_heads(self.rv_patches(tokens), 2, self.num_heads)
        return self.proj_lat(merge_heads(F.scaled_dot_product_attention(r_lat, r_tok, v_tok))), None


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention between latents and tokens, each stream with its own MLP.

    ``one_sided=True`` builds the last classifier layer: no token update, no token MLP.
    """

    def __init__(self, dims: int, attn_dims: int, num_heads: int, mlp_ratio: float = 4.0,
                 one_sided: bool = False, layer_scale_init: Optional[float] = None,
                 drop_path_rate: float = 0.0):
        super().__init__()
        self.one_sided = one_sided
        self.norm1_lat = layer_norm(dims)
        self.norm1_pat = layer_norm(dims)
        attention = LatentCrossAttention if one_sided else BiCrossAttention
        self.attn = attention(dims, attn_dims, num_heads)
        self.ls1_lat = layer_scale(dims, layer_scale_init)
        self.norm2_lat = layer_norm(dims)
        self.mlp_lat = Mlp(dims, int(dims * mlp_ratio))
        self.ls2_lat = layer_scale(dims, layer_scale_init)
        if not one_sided:
            self.ls1_pat = layer_scale(dims, layer_scale_init)
            self.norm2_pat = layer_norm(dims)
            self.mlp_pat = Mlp(dims, int(dims * mlp_ratio))
            self.ls2_pat = layer_scale(dims, layer_scale_init)
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, latents: Tensor, tokens: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        lat_update, tok_update = self.attn(self.norm1_lat(latents), self.norm1_pat(tokens))
        latents = latents + self.drop_path(self.ls1_lat(lat_update))
        latents = latents + self.drop_path(self.ls2_lat(self.mlp_lat(self.norm2_lat(latents))))
        if self.one_sided:
            return latents, None
        tokens = tokens + self.drop_path(self.ls1_pat(tok_update))
        tokens = tokens + self.drop_path(self.ls2_pat(self.mlp_pat(self.norm2_pat(tokens))))
        return latents, tokens


class LatentSelfAttentionBlock(nn.Module):
    """A pre-norm ViT block over the latents."""

    def __init__(self, dims: int, num_heads: int, mlp_ratio: float = 4.0,
                 layer_scale_init: Optional[float] = None, drop_path_rate: float = 0.0):
        super().__init__()
        self.norm1 = layer_norm(dims)
        self.attn = SelfAttention(dims, num_heads)
        self.ls1 = layer_scale(dims, layer_scale_init)
        self.norm2 = layer_norm(dims)
        self.mlp = Mlp(dims, int(dims * mlp_ratio))
        self.ls2 = layer_scale(dims, layer_scale_init)
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class BiXTLayer(nn.Module):
    """Cross-attention between latents and tokens, then self-attention among the latents."""

    def __init__(self, dims: int, num_heads: int, attn_dims: Optional[int] = None,
                 mlp_ratio: float = 4.0, one_sided: bool = False,
                 layer_scale_init: Optional[float] = None, cross_drop_path: float = 0.0,
                 self_drop_path: float = 0.0):
        super().__init__()
        self.cross_attention_latents_token = CrossAttentionBlock(
            dims, attn_dims or dims, num_heads, mlp_ratio, one_sided, layer_scale_init,
            cross_drop_path)
        self.self_attention_latents = LatentSelfAttentionBlock(
            dims, num_heads, mlp_ratio, layer_scale_init, self_drop_path)

    def forward(self, latents: Tensor, tokens: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        latents, tokens = self.cross_attention_latents_token(latents, tokens)
        return self.self_attention_latents(latents), tokens


class BiXTCore(nn.Module):
    """Learned latents and a stack of BiXT layers, fed with already embedded tokens ``[B, N, D]``.

    Args:
        embed_dims: width D of latents and tokens.
        num_heads: heads of both attentions.
        num_latents: number of learned latent vectors L.
        num_layers: bi-directional layers (each refines latents and tokens).
        one_sided_last: append the latent-only layer of the classifiers after them.
        attn_dims: inner width A of the cross-attention (defaults to D).
        layer_scale_init: LayerScale initial value; None disables LayerScale.
        cross_drop_path_rate / self_drop_path_rate: stochastic depth of the cross- and the
            self-attention blocks, rising linearly from 0 over the layers.
        with_cp: recompute each layer in backward (gradient checkpointing) to save memory.
    """

    def __init__(self, embed_dims: int, num_heads: int, num_latents: int, num_layers: int,
                 one_sided_last: bool = False, attn_dims: Optional[int] = None,
                 mlp_ratio: float = 4.0, layer_scale_init: Optional[float] = None,
                 cross_drop_path_rate: float = 0.0, self_drop_path_rate: float = 0.0,
                 with_cp: bool = False):
        super().__init__()
        self.embed_dims = embed_dims
        self.num_layers = num_layers
        self.with_cp = with_cp
        self.latents = nn.Parameter(torch.zeros(1, num_latents, embed_dims))
        nn.init.trunc_normal_(self.latents, std=0.02)
        depth = num_layers + int(one_sided_last)
        cross_rates = torch.linspace(0, cross_drop_path_rate, depth).tolist()
        self_rates = torch.linspace(0, self_drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            BiXTLayer(embed_dims, num_heads, attn_dims, mlp_ratio,
                      one_sided=i == num_layers, layer_scale_init=layer_scale_init,
                      cross_drop_path=cross_rates[i], self_drop_path=self_rates[i])
            for i in range(depth))
        self.apply(_init_linear)

    def forward_layers(self, tokens: Tensor) -> Iterator[tuple[Tensor, Optional[Tensor]]]:
        """Runs every layer, yielding ``(latents, tokens)`` after each (tokens None after a one-sided one)."""
        latents = self.latents.expand(tokens.shape[0], -1, -1)
        for layer in self.blocks:
            if self.with_cp and self.training and torch.is_grad_enabled():
                latents, tokens = checkpoint(layer, latents, tokens, use_reentrant=False)
            else:
                latents, tokens = layer(latents, tokens)
            yield latents, tokens

    def forward(self, tokens: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """Final ``(latents, tokens)``."""
        for latents, out_tokens in self.forward_layers(tokens):
            if out_tokens is not None:
                tokens = out_tokens
        return latents, tokens


def _init_linear(module: nn.Module) -> None:
    # The original's 'jax' scheme: xavier-uniform weights, zero biases (tiny noise in MLPs is
    # irrelevant once pretrained weights are loaded).
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
