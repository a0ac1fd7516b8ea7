"""The BiXT core: latents and bi-directional cross-attention layers.

One implementation serves the image backbone, the point-cloud backbone and the timm classifiers.
Module and parameter names follow the released checkpoints (``blocks.i.cross_attention_latents_token``,
``blocks.i.self_attention_latents``), so released weights map onto it without renaming inside a layer.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Iterator, Mapping, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ...archs import BiXTArch
from .bidir_attention import (ATTENTION_KERNELS, DEFAULT_ATTENTION_KERNEL, bidirectional_attention,
                              merge_heads)
from .fast_ops import FUSED_BY_DEFAULT, linear, linear_gelu, linear_residual
from .tracing import traced

LAYER_NORM_EPS = 1e-6
# The chunk sizes of the token stream (see CrossAttentionBlock), each defined here only.
# Memory-lean training path: a forward *with* gradients over more tokens than this runs the token
# side in chunks under activation checkpointing. 4096 = a 1024px image at stride 16, 512px at 8.
TRAIN_CHUNK_TOKENS = 4096
# Inference streaming: a forward *without* gradients over more tokens than this runs the token side
# chunk by chunk so each chunk's activations stay in the CPU caches.
STREAM_CHUNK_TOKENS = 4096


@dataclass(frozen=True)
class ExecutionSettings:
    """How a ``BiXTCore`` runs; none of it changes a result (beyond float rounding).

    with_cp: recompute each layer in backward (gradient checkpointing) while training.
    train_chunk_size: a forward with gradients over more tokens than this runs the token stream
        in chunks of this size, recomputed in backward (memory-lean training). None: never.
    stream_chunk_size: a forward without gradients over more tokens than this streams the token
        side in chunks of this size (cache locality). None: never.
    fused: oneDNN's fused linear kernels in eager CPU inference (``fast_ops``); False runs the
        plain PyTorch ops (and the portable attention). The default is False where
        ``MMBIXT_FUSED_KERNELS=0`` was set when mmbixt was imported (the portable path).
    attention_kernel: ``'portable'`` (one fused-attention call per direction) or ``'fused'`` (the
        tiled CPU inference kernel of ``bidir_attention``, where it applies). The default is
        ``'fused'``, ``'portable'`` where ``MMBIXT_FUSED_ATTENTION=0`` was set when mmbixt was
        imported.

    Every model takes it as ``execution`` (an ``ExecutionSettings`` or a dict of these fields) and
    changes it with ``set_execution``; the core passes it down with each call.
    """
    with_cp: bool = False
    train_chunk_size: Optional[int] = TRAIN_CHUNK_TOKENS
    stream_chunk_size: Optional[int] = STREAM_CHUNK_TOKENS
    fused: bool = FUSED_BY_DEFAULT
    attention_kernel: str = DEFAULT_ATTENTION_KERNEL

    def __post_init__(self) -> None:
        if self.attention_kernel not in ATTENTION_KERNELS:
            raise ValueError(f'attention_kernel must be one of {ATTENTION_KERNELS}, got '
                             f'{self.attention_kernel!r}')
        for name in ('train_chunk_size', 'stream_chunk_size'):
            size = getattr(self, name)
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
                raise ValueError(f'{name} must be None or a positive number of tokens, got {size!r}')
            if size == 0:  # 0 has always meant "never chunk"
                object.__setattr__(self, name, None)

    def chunk_size(self) -> Optional[int]:
        """The chunk size of this forward: the training one when autograd records, else the
        streaming one."""
        return self.train_chunk_size if torch.is_grad_enabled() else self.stream_chunk_size

    def kernel(self) -> str:
        """The attention kernel of a call: the chosen one while the fused kernels are on."""
        return self.attention_kernel if self.fused else 'portable'

    @classmethod
    def of(cls, execution: 'ExecutionLike' = None) -> 'ExecutionSettings':
        """``execution`` as settings: None (the defaults), a dict of fields, or settings."""
        if execution is None or isinstance(execution, ExecutionSettings):
            return execution or cls()
        return cls().updated(**dict(execution))

    def updated(self, **changes) -> 'ExecutionSettings':
        """A copy with ``changes``; refuses names that are not settings."""
        known = {field.name for field in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f'unknown execution settings {unknown}; known: {sorted(known)}')
        return replace(self, **changes)


ExecutionLike = Union[ExecutionSettings, Mapping, None]


def layer_norm(dims: int) -> nn.LayerNorm:
    return nn.LayerNorm(dims, eps=LAYER_NORM_EPS)


def split_heads(x: Tensor, parts: int, num_heads: int) -> list[Tensor]:
    """``[B, N, parts*A]`` -> ``parts`` tensors ``[B, heads, N, A/heads]`` (the released split order)."""
    batch, length, width = x.shape
    x = x.reshape(batch, length, parts, num_heads, width // (parts * num_heads))
    return x.permute(2, 0, 3, 1, 4).unbind(0)


def token_attention_mask(token_mask: Optional[Tensor]) -> Optional[Tensor]:
    """A token mask ``[B, N]`` (True = valid) as the boolean ``attn_mask`` ``[B, 1, 1, N]`` of the
    latents' attention over tokens (True = takes part); None stays None (the unmasked kernel)."""
    return None if token_mask is None else token_mask[:, None, None, :]


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def keep_mask(self, x: Tensor) -> Optional[Tensor]:
        """The per-sample scale ``[B, 1, ..]`` (0 or 1/keep) of one draw; None when nothing drops."""
        if self.drop_prob == 0.0 or not self.training:
            return None
        keep = 1.0 - self.drop_prob
        return x.new_empty([x.shape[0]] + [1] * (x.ndim - 1)).bernoulli_(keep).div_(keep)

    def forward(self, x: Tensor) -> Tensor:
        return apply_mask(x, self.keep_mask(x))

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob:.3f}'


def apply_mask(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    return x if mask is None else x * mask


def branch_mask(drop: nn.Module, x: Tensor) -> Optional[Tensor]:
    """The stochastic-depth draw of ``drop`` (a ``DropPath`` or ``nn.Identity``) for a branch of ``x``."""
    return drop.keep_mask(x) if isinstance(drop, DropPath) else None


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

    def hidden(self, x: Tensor, fused: bool = True) -> Tensor:
        """``GELU(fc1(x))``, one fused kernel in CPU inference (``fused``)."""
        if torch.jit.is_scripting():  # (fast_ops takes modules as arguments: eager only)
            return F.gelu(self.fc1(x))
        return linear_gelu(x, self.fc1, fused)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.hidden(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the latents, through PyTorch's fused attention kernel."""

    def __init__(self, dims: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dims, dims * 3)
        self.proj = nn.Linear(dims, dims)

    def read(self, x: Tensor, fused: bool = True) -> Tensor:
        """The attention's merged heads before the output projection ``proj``."""
        # Scripted: the standard op (fast_ops takes modules as arguments: eager only).
        qkv = self.qkv(x) if torch.jit.is_scripting() else linear(x, self.qkv, fused)
        q, k, v = split_heads(qkv, 3, self.num_heads)
        return merge_heads(F.scaled_dot_product_attention(q, k, v))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.read(x))


class BiCrossAttention(nn.Module):
    """Bi-directional cross-attention: one similarity ``S = r_lat @ r_tok^T``, a softmax along each axis.

    The latents read the tokens (softmax of S over tokens) and the tokens read the latents (softmax of
    S^T over latents); each side has a reference ``r`` and a value ``v``. Each direction is one call
    of PyTorch's fused attention (queries of one side against the references of the other), so S is
    formed in blocks inside the kernel and neither ``[B, heads, L, N]`` matrix is ever stored; that is
    faster than materialising S once and leaner in training. ``CrossAttentionBlock`` runs it through
    its parts (references, reads, per-chunk partials); it has no ``forward`` of its own.
    """

    def __init__(self, dims: int, attn_dims: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (attn_dims // num_heads) ** -0.5
        self.rv_latents = nn.Linear(dims, attn_dims * 2)
        self.rv_patches = nn.Linear(dims, attn_dims * 2)
        self.proj_lat = nn.Linear(attn_dims, dims)
        self.proj_pat = nn.Linear(attn_dims, dims)

    def latent_refs(self, latents: Tensor, fused: bool = True) -> tuple[Tensor, Tensor]:
        """``(r_lat, v_lat)``, each ``[B, heads, L, a]`` (views into one projection)."""
        refs = (self.rv_latents(latents) if torch.jit.is_scripting()  # (as in SelfAttention)
                else linear(latents, self.rv_latents, fused))
        r_lat, v_lat = split_heads(refs, 2, self.num_heads)
        return r_lat, v_lat

    def token_refs(self, tokens: Tensor, fused: bool = True) -> tuple[Tensor, Tensor]:
        """``(r_tok, v_tok)``, each ``[B, heads, N, a]`` (views into one projection)."""
        refs = (self.rv_patches(tokens) if torch.jit.is_scripting()  # (as in SelfAttention)
                else linear(tokens, self.rv_patches, fused))
        r_tok, v_tok = split_heads(refs, 2, self.num_heads)
        return r_tok, v_tok

    def token_read(self, r_tok: Tensor, r_lat: Tensor, v_lat: Tensor) -> Tensor:
        """What each token reads from the latents (softmax over latents), before ``proj_pat``:
        ``[B, N, A]``. Exact for any subset of tokens, so the chunked path calls it per chunk."""
        return merge_heads(F.scaled_dot_product_attention(r_tok, r_lat, v_lat))

    def latent_read(self, r_lat: Tensor, r_tok: Tensor, v_tok: Tensor,
                    token_mask: Optional[Tensor] = None) -> Tensor:
        """What each latent reads from all valid tokens (softmax over tokens), before
        ``proj_lat``: ``[B, L, A]``."""
        return merge_heads(F.scaled_dot_product_attention(
            r_lat, r_tok, v_tok, attn_mask=token_attention_mask(token_mask)))

    def reads(self, r_lat: Tensor, v_lat: Tensor, r_tok: Tensor, v_tok: Tensor,
              token_mask: Optional[Tensor] = None, kernel: str = 'portable'
              ) -> tuple[Tensor, Tensor]:
        """``(latent_read, token_read)`` (bidir_attention.py: one fused attention call per
        direction, or, with ``kernel='fused'``, a CPU inference kernel that forms the similarity
        matrix once)."""
        if torch.jit.is_scripting():  # the kernel's dispatch is Python only
            return (self.latent_read(r_lat, r_tok, v_tok, token_mask),
                    self.token_read(r_tok, r_lat, v_lat))
        return bidirectional_attention(r_lat, v_lat, r_tok, v_tok, token_mask, kernel)

    def latent_partial(self, r_lat: Tensor, r_tok: Tensor, v_tok: Tensor,
                       token_mask: Optional[Tensor] = None) -> 'SoftmaxPartial':
        """The latent side over one chunk of tokens (its valid ones), unnormalised, for an
        online softmax."""
        # Statistics in at least fp32, also under bf16 autocast.
        stat_dtype = torch.promote_types(r_tok.dtype, torch.float32)
        sim = (r_lat @ r_tok.transpose(-2, -1)).to(stat_dtype).mul_(self.scale)  # [B, h, L, chunk]
        if token_mask is not None:
            sim = sim.masked_fill(~token_attention_mask(token_mask), float('-inf'))
        # The max only stabilises exp(); the combined result does not depend on it, so it is a
        # constant for autograd (detached) and the gradient stays exact.
        peak = sim.detach().amax(dim=-1, keepdim=True)
        # A chunk without a valid token of a sample keeps its peak of -inf (so finish_partials
        # weighs it 0) but shifts by 0 here: its weights are exp(-inf) = 0, not NaN.
        shift = peak if token_mask is None else peak.clamp_min(torch.finfo(stat_dtype).min)
        weights = (sim - shift).exp()
        return SoftmaxPartial(peak, weights.sum(dim=-1, keepdim=True),
                              (weights.to(v_tok.dtype) @ v_tok).to(stat_dtype))

    def finish_partials(self, partials: list['SoftmaxPartial'], dtype: torch.dtype) -> Tensor:
        """Merges the per-chunk partials into ``latent_read``'s result ``[B, L, A]``."""
        peak = torch.stack([p.peak for p in partials]).amax(dim=0)
        total = acc = None
        for part in partials:
            rescale = (part.peak - peak).exp()
            total = part.total * rescale if total is None else total + part.total * rescale
            acc = part.acc * rescale if acc is None else acc + part.acc * rescale
        return merge_heads((acc / total).to(dtype))

    @torch.no_grad()
    def attention_maps(self, latents: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Both attentions for inspection, ``[B, heads, L, N]`` each: where each latent looks
        (rows sum to 1 over tokens) and which latents each token reads (columns sum to 1)."""
        r_lat = self.latent_refs(latents)[0]
        r_tok = self.token_refs(tokens)[0]
        sim = (r_lat @ r_tok.transpose(-2, -1)) * self.scale
        return sim.softmax(dim=-1), sim.softmax(dim=-2)


class SoftmaxPartial(NamedTuple):
    """One chunk's share of a softmax over tokens: its max, its sum of exp, its weighted values."""
    peak: Tensor   # [B, heads, L, 1]
    total: Tensor  # [B, heads, L, 1]
    acc: Tensor    # [B, heads, L, a]


class LatentCrossAttention(nn.Module):
    """One-sided cross-attention of the last classifier layer: only the latents are updated."""

    def __init__(self, dims: int, attn_dims: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.r_latents = nn.Linear(dims, attn_dims)
        self.rv_patches = nn.Linear(dims, attn_dims * 2)
        self.proj_lat = nn.Linear(attn_dims, dims)

    def latent_read(self, latents: Tensor, tokens: Tensor,
                    token_mask: Optional[Tensor] = None, fused: bool = True) -> Tensor:
        """What each latent reads from the valid tokens, before ``proj_lat``: ``[B, L, A]``."""
        lat_refs = (self.r_latents(latents) if torch.jit.is_scripting()  # (as in SelfAttention)
                    else linear(latents, self.r_latents, fused))
        tok_refs = (self.rv_patches(tokens) if torch.jit.is_scripting()
                    else linear(tokens, self.rv_patches, fused))
        r_lat = split_heads(lat_refs, 1, self.num_heads)[0]
        r_tok, v_tok = split_heads(tok_refs, 2, self.num_heads)
        return merge_heads(F.scaled_dot_product_attention(
            r_lat, r_tok, v_tok, attn_mask=token_attention_mask(token_mask)))

    def forward(self, latents: Tensor, tokens: Tensor,
                token_mask: Optional[Tensor] = None) -> tuple[Tensor, None]:
        return self.proj_lat(self.latent_read(latents, tokens, token_mask)), None


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention between latents and tokens, each stream with its own MLP.

    ``one_sided=True`` builds the last classifier layer: no token update, no token MLP.

    Long sequences: the token stream runs in chunks above one of two sizes, chosen by whether the
    forward records gradients. Everything on the token side is exact per chunk (its softmax is over
    the latents). The sizes come with each call (``ExecutionSettings``, held by the core).
    ``train_chunk_size`` (with gradients, the memory-lean training path): each chunk
    runs under activation checkpointing and the latents' softmax over all tokens is merged across
    chunks online (running max / sum / weighted values), so training keeps only the block's input
    and output tokens instead of every ``[B, N, ..]`` activation of the token side, at the price of
    recomputing that side once in backward. ``stream_chunk_size`` (without gradients, inference
    streaming): each chunk's activations stay in the CPU caches. None or 0 never chunks.
    """
    __constants__ = ['one_sided']  # TorchScript compiles only the branch of this block

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
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, latents: Tensor, tokens: Tensor, token_mask: Optional[Tensor] = None,
                chunk_size: Optional[int] = None, fused: bool = True, kernel: str = 'portable'
                ) -> tuple[Tensor, Optional[Tensor]]:
        """``token_mask`` (bool ``[B, N]``, True = valid; None: all valid): the latents read only
        valid tokens. Every token is updated (invalid ones stay finite). ``chunk_size``: more
        tokens than this run the token stream in chunks (the core's
        ``ExecutionSettings.chunk_size()``); None never chunks. ``fused`` / ``kernel``: the fused
        CPU kernels and the attention kernel of the core's ``ExecutionSettings``."""
        if self.one_sided:  # a constant: TorchScript compiles only the branch of this block
            lat_read = self.attn.latent_read(self.norm1_lat(latents), self.norm1_pat(tokens),
                                             token_mask, fused)
            return self._latent_residuals(latents, lat_read, fused), None
        r_lat, v_lat = self.attn.latent_refs(self.norm1_lat(latents), fused)
        # One draw per branch for the whole block, shared by all chunks.
        keep_attn, keep_mlp = self.drop_path.keep_mask(tokens), self.drop_path.keep_mask(tokens)
        # Chunks run as a Python loop: eager only, and never for a symbolic token count
        # (torch.export, FX), where the loop would pin the graph to the example's.
        if not torch.jit.is_scripting():
            if chunk_size and not traced(tokens.shape[1]) and tokens.shape[1] > chunk_size:
                if torch.is_grad_enabled():  # (the fused kernels serve no gradients)
                    lat_read, tokens = self._chunked_token_stream(
                        tokens, r_lat, v_lat, keep_attn, keep_mlp, chunk_size, token_mask)
                else:
                    lat_read, tokens = self._streamed_token_side(
                        tokens, r_lat, v_lat, keep_attn, keep_mlp, chunk_size, token_mask, fused,
                        kernel)
                return self._latent_residuals(latents, lat_read, fused), tokens
        r_tok, v_tok = self.attn.token_refs(self.norm1_pat(tokens), fused)
        lat_read, tok_read = self.attn.reads(r_lat, v_lat, r_tok, v_tok, token_mask, kernel)
        tokens = self._token_residuals(tokens, tok_read, keep_attn, keep_mlp, fused)
        return self._latent_residuals(latents, lat_read, fused), tokens

    def _latent_residuals(self, latents: Tensor, lat_read: Tensor, fused: bool = True) -> Tensor:
        """Both residual branches of the latents, from their read of the tokens (unprojected)."""
        if torch.jit.is_scripting():  # the standard ops (fast_ops takes modules: eager only)
            latents = latents + apply_mask(self.ls1_lat(self.attn.proj_lat(lat_read)),
                                           self.drop_path.keep_mask(latents))
            return latents + apply_mask(self.ls2_lat(self.mlp_lat(self.norm2_lat(latents))),
                                        self.drop_path.keep_mask(latents))
        latents = linear_residual(lat_read, self.attn.proj_lat, latents, self.ls1_lat,
                                  self.drop_path.keep_mask(latents), fused)
        return linear_residual(self.mlp_lat.hidden(self.norm2_lat(latents), fused),
                               self.mlp_lat.fc2, latents, self.ls2_lat,
                               self.drop_path.keep_mask(latents), fused)

    def _token_residuals(self, tokens: Tensor, tok_read: Tensor, keep_attn: Optional[Tensor],
                         keep_mlp: Optional[Tensor], fused: bool = True) -> Tensor:
        """Both residual branches of the tokens, from their read of the latents (unprojected)."""
        if torch.jit.is_scripting():  # as in _latent_residuals
            tokens = tokens + apply_mask(self.ls1_pat(self.attn.proj_pat(tok_read)), keep_attn)
            return tokens + apply_mask(self.ls2_pat(self.mlp_pat(self.norm2_pat(tokens))), keep_mlp)
        tokens = linear_residual(tok_read, self.attn.proj_pat, tokens, self.ls1_pat, keep_attn,
                                 fused)
        return linear_residual(self.mlp_pat.hidden(self.norm2_pat(tokens), fused),
                               self.mlp_pat.fc2, tokens, self.ls2_pat, keep_mlp, fused)

    def _token_chunk(self, tokens: Tensor, r_lat: Tensor, v_lat: Tensor,
                     keep_attn: Optional[Tensor], keep_mlp: Optional[Tensor],
                     token_mask: Optional[Tensor]) -> tuple[Tensor, 'SoftmaxPartial']:
        """The whole token side of one chunk, plus its share of the latents' softmax."""
        r_tok, v_tok = self.attn.token_refs(self.norm1_pat(tokens))
        partial = self.attn.latent_partial(r_lat, r_tok, v_tok, token_mask)
        tokens = self._token_residuals(tokens, self.attn.token_read(r_tok, r_lat, v_lat),
                                       keep_attn, keep_mlp)
        return tokens, partial

    def _streamed_token_side(self, tokens: Tensor, r_lat: Tensor, v_lat: Tensor,
                             keep_attn: Optional[Tensor], keep_mlp: Optional[Tensor],
                             chunk: int, token_mask: Optional[Tensor], fused: bool = True,
                             kernel: str = 'portable') -> tuple[Tensor, Tensor]:
        """Without gradients: the token side chunk by chunk, so each chunk's activations (the
        4x-wide MLP ones above all) stay in the CPU caches; exact, since it is per token. Both
        directions of the attention read the references of all tokens in one call in between."""
        refs = tokens.new_empty(tokens.shape[:2] + (self.attn.rv_patches.out_features,))
        out = torch.empty_like(tokens)
        parts = [slice(start, start + chunk) for start in range(0, tokens.shape[1], chunk)]
        for part in parts:
            refs[:, part] = linear(self.norm1_pat(tokens[:, part]), self.attn.rv_patches, fused)
        r_tok, v_tok = split_heads(refs, 2, self.attn.num_heads)
        lat_read, tok_read = self.attn.reads(r_lat, v_lat, r_tok, v_tok, token_mask, kernel)
        for part in parts:
            out[:, part] = self._token_residuals(tokens[:, part], tok_read[:, part], keep_attn,
                                                 keep_mlp, fused)
        return lat_read, out

    def _chunked_token_stream(self, tokens: Tensor, r_lat: Tensor, v_lat: Tensor,
                              keep_attn: Optional[Tensor], keep_mlp: Optional[Tensor],
                              chunk: int, token_mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        outs, partials = [], []
        parts = tokens.split(chunk, dim=1)
        masks = [None] * len(parts) if token_mask is None else token_mask.split(chunk, dim=1)
        for part, part_mask in zip(parts, masks):
            out, partial = checkpoint(self._token_chunk, part, r_lat, v_lat, keep_attn, keep_mlp,
                                      part_mask, use_reentrant=False)
            outs.append(out)
            partials.append(partial)
        return self.attn.finish_partials(partials, r_lat.dtype), torch.cat(outs, dim=1)


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

    def forward(self, x: Tensor, fused: bool = True) -> Tensor:
        if torch.jit.is_scripting():  # the standard ops (fast_ops takes modules: eager only)
            x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
            return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
        x = linear_residual(self.attn.read(self.norm1(x), fused), self.attn.proj, x, self.ls1,
                            branch_mask(self.drop_path, x), fused)
        return linear_residual(self.mlp.hidden(self.norm2(x), fused), self.mlp.fc2, x, self.ls2,
                               branch_mask(self.drop_path, x), fused)


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

    def forward(self, latents: Tensor, tokens: Tensor, token_mask: Optional[Tensor] = None,
                chunk_size: Optional[int] = None, fused: bool = True, kernel: str = 'portable'
                ) -> tuple[Tensor, Optional[Tensor]]:
        latents, out_tokens = self.cross_attention_latents_token(latents, tokens, token_mask,
                                                                 chunk_size, fused, kernel)
        return self.self_attention_latents(latents, fused), out_tokens


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
        execution: the ``ExecutionSettings`` (or a dict of its fields; None: the defaults), held
            once in ``execution`` and changed with ``set_execution``.
    """
    __jit_unused_properties__ = ['num_token_layers']  # eager only: TorchScript skips it

    def __init__(self, embed_dims: int, num_heads: int, num_latents: int, num_layers: int,
                 one_sided_last: bool = False, attn_dims: Optional[int] = None,
                 mlp_ratio: float = 4.0, layer_scale_init: Optional[float] = None,
                 cross_drop_path_rate: float = 0.0, self_drop_path_rate: float = 0.0,
                 execution: ExecutionLike = None):
        super().__init__()
        for setting, width in (('embed_dims', embed_dims), ('attn_dims', attn_dims or embed_dims)):
            if width % num_heads:  # else a reshape error deep inside the first forward
                raise ValueError(f'num_heads={num_heads} does not divide {setting}={width}: each '
                                 f'head takes {setting} / num_heads channels')
        self.embed_dims = embed_dims
        self.num_layers = num_layers
        self.execution = ExecutionSettings.of(execution)
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

    def set_execution(self, **settings) -> ExecutionSettings:
        """Changes the named ``ExecutionSettings`` (``with_cp``, ``train_chunk_size``,
        ``stream_chunk_size``, ``fused``, ``attention_kernel``), keeps the others; returns the
        settings now held."""
        self.execution = self.execution.updated(**settings)
        return self.execution

    @property
    def num_token_layers(self) -> int:
        """The layers that refine tokens (all but a one-sided last layer)."""
        return sum(not layer.cross_attention_latents_token.one_sided for layer in self.blocks)

    @classmethod
    def from_arch(cls, arch: 'BiXTArch', **kwargs) -> 'BiXTCore':
        """The core of ``arch`` (LayerScale, where the arch has it, starts at 1e-5 as released);
        ``kwargs`` are the other settings of ``BiXTCore``."""
        return cls(arch.embed_dims, arch.num_heads, arch.num_latents, arch.num_layers,
                   layer_scale_init=1e-5 if arch.layer_scale else None, **kwargs)

    def forward_layers(self, tokens: Tensor, token_mask: Optional[Tensor] = None
                       ) -> Iterator[tuple[Tensor, Optional[Tensor]]]:
        """Runs every layer, yielding ``(latents, tokens)`` after each (tokens None after a
        one-sided one). ``token_mask``: bool ``[B, N]``, True = a valid token (each sample needs
        one); the latents attend to valid tokens only. None (all valid) runs the unmasked kernels."""
        latents = self.latents.expand(tokens.shape[0], -1, -1)
        for layer in self.blocks:
            latents, tokens = self._run_layer(layer, latents, tokens, token_mask)
            yield latents, tokens

    def _run_layer(self, layer: BiXTLayer, latents: Tensor, tokens: Tensor,
                   token_mask: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """One layer under the execution settings."""
        execution = self.execution
        settings = (execution.chunk_size(), execution.fused, execution.kernel())
        if execution.with_cp and self.training and torch.is_grad_enabled():
            return checkpoint(layer, latents, tokens, token_mask, *settings, use_reentrant=False)
        return layer(latents, tokens, token_mask, *settings)

    def forward_until(self, tokens: Tensor, indices: Sequence[int],
                      token_mask: Optional[Tensor] = None
                      ) -> dict[int, tuple[Tensor, Optional[Tensor]]]:
        """``(latents, tokens)`` after each layer in ``indices``; stops after the last of them."""
        wanted, last = set(indices), max(indices)
        outputs = {}
        for index, state in enumerate(self.forward_layers(tokens, token_mask)):
            if index in wanted:
                outputs[index] = state
            if index == last:
                break
        return outputs

    def freeze_unreachable(self, last_layer: int, latents_used: bool = False) -> list[str]:
        """Stops training the parameters that cannot reach an output when only the layers up to
        ``last_layer`` are read: the layers after it and, unless its latents are used, that layer's
        latent side (the tokens it returns were computed from the latents it received). DDP then
        needs no ``find_unused_parameters``. Returns the frozen names."""
        frozen = [f'blocks.{i}.' for i in range(last_layer + 1, len(self.blocks))]
        if not latents_used:
            layer = f'blocks.{last_layer}.'
            frozen += [layer + 'self_attention_latents.'] + [
                layer + 'cross_attention_latents_token.' + part
                for part in ('attn.proj_lat.', 'norm2_lat.', 'mlp_lat.', 'ls1_lat.', 'ls2_lat.')]
        names = [n for n, _ in self.named_parameters() if n.startswith(tuple(frozen))]
        for name, param in self.named_parameters():
            if name in names:
                param.requires_grad = False
        return names

    def forward(self, tokens: Tensor, token_mask: Optional[Tensor] = None
                ) -> tuple[Tensor, Tensor]:
        """Final ``(latents, tokens)``."""
        if torch.jit.is_scripting():  # a plain loop: no generator, checkpointing or settings
            latents = self.latents.expand(tokens.shape[0], -1, -1)
            for layer in self.blocks:
                latents, out_tokens = layer(latents, tokens, token_mask)
                if out_tokens is not None:
                    tokens = out_tokens
            return latents, tokens
        for latents, out_tokens in self.forward_layers(tokens, token_mask):
            if out_tokens is not None:
                tokens = out_tokens
        return latents, tokens


def _init_linear(module: nn.Module) -> None:
    # The original's 'jax' scheme: xavier-uniform weights, zero biases (tiny noise in MLPs is
    # irrelevant once pretrained weights are loaded).
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
