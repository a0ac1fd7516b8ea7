"""A plain BiXT forward: the textbook math, both attention matrices materialised and kept.

A test oracle: it reads the parameters of a ``BiXTCore`` and serves as an independent check of the
fast paths (plain PyTorch ops only: no fused kernels, no chunking).
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch import Tensor

from mmbixt.models.core.layers import BiCrossAttention, BiXTCore, CrossAttentionBlock


def _heads(x: Tensor, parts: int, num_heads: int) -> list[Tensor]:
    batch, length, width = x.shape
    x = x.reshape(batch, length, parts, num_heads, width // (parts * num_heads))
    return [x[:, :, i].transpose(1, 2) for i in range(parts)]


def _merge(x: Tensor) -> Tensor:
    return x.transpose(1, 2).flatten(2)


def plain_bi_attention(attn: BiCrossAttention, latents: Tensor, tokens: Tensor
                       ) -> tuple[Tensor, Tensor]:
    """``S = r_lat r_tok^T / sqrt(a)``; latents: softmax over tokens; tokens: softmax over latents."""
    r_lat, v_lat = _heads(attn.rv_latents(latents), 2, attn.num_heads)
    r_tok, v_tok = _heads(attn.rv_patches(tokens), 2, attn.num_heads)
    sim = torch.matmul(r_lat, r_tok.transpose(-2, -1)) * attn.scale  # [B, heads, L, N]
    attn_lat = torch.softmax(sim, dim=-1)
    attn_tok = torch.softmax(sim, dim=-2)
    lat = attn.proj_lat(_merge(torch.matmul(attn_lat, v_tok)))
    tok = attn.proj_pat(_merge(torch.matmul(attn_tok.transpose(-2, -1), v_lat)))
    return lat, tok


def plain_cross_block(block: CrossAttentionBlock, latents: Tensor, tokens: Tensor
                      ) -> tuple[Tensor, Optional[Tensor]]:
    """A bi-directional cross-attention block without stochastic depth."""
    lat, tok = plain_bi_attention(block.attn, block.norm1_lat(latents), block.norm1_pat(tokens))
    latents = latents + block.ls1_lat(lat)
    latents = latents + block.ls2_lat(block.mlp_lat(block.norm2_lat(latents)))
    tokens = tokens + block.ls1_pat(tok)
    tokens = tokens + block.ls2_pat(block.mlp_pat(block.norm2_pat(tokens)))
    return latents, tokens


def plain_forward_layers(core: BiXTCore, tokens: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    """``BiXTCore.forward_layers`` in plain math (bi-directional layers only)."""
    latents = core.latents.expand(tokens.shape[0], -1, -1)
    for layer in core.blocks:
        block = layer.cross_attention_latents_token
        if block.one_sided:
            return
        latents, tokens = plain_cross_block(block, latents, tokens)
        latents = layer.self_attention_latents(latents)
        yield latents, tokens
