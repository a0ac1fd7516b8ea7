"""Both directions of BiXT's cross-attention from one similarity matrix.

``bidirectional_attention`` returns what the latents read from the tokens (softmax of
``S = r_lat r_tok^T * scale`` over the tokens) and what the tokens read from the latents (softmax of
``S`` over the latents), merged over heads. Two implementations give the same result:

- the fused CPU kernel (``bidir_attention.kernel.cpp``): ``S`` is formed once per (sample, head,
  block of 64 tokens) in cache, and both softmaxes and both weighted sums are done from it. It is
  compiled with ``torch.utils.cpp_extension.load_inline`` on first use (a C++ compiler is needed
  then, never for ``make setup``) and serves eager CPU inference (no gradients, no tracing) in fp32
  and bf16;
- the portable path: two calls of PyTorch's fused attention, one per direction (training,
  autocast-free GPU, export, and wherever the kernel does not compile).

The portable path is the default: on the CPUs measured (docs/performance.md, `make bench`) the
kernel is within a few percent of the two fused-attention calls and mostly behind them, so it is
opt-in: the core's ``ExecutionSettings.attention_kernel='fused'`` (``set_execution``) uses it where
it applies (`make bench` times both); ``MMBIXT_FUSED_ATTENTION=1``, read once when mmbixt is
imported, makes that the default. A compile failure then warns once and every call takes the
portable path.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ...environment import switch
from .tracing import traced

KERNEL_SOURCE = Path(__file__).with_name('bidir_attention.kernel.cpp')
SWITCH = 'MMBIXT_FUSED_ATTENTION'
ATTENTION_KERNELS = ('portable', 'fused')
# The default kernel choice, from the environment once (the settings decide each call).
# A value other than 0 or 1 is refused here, naming the valid one (mmbixt.environment).
DEFAULT_ATTENTION_KERNEL = 'fused' if switch(SWITCH) else 'portable'
KERNEL_DTYPES = (torch.float32, torch.bfloat16)
KERNEL_HEAD_DIMS = (16, 32, 64)  # the head widths the kernel is instantiated for


def merge_heads(x: Tensor) -> Tensor:
    """``[B, heads, n, a]`` -> ``[B, n, heads*a]``."""
    batch, heads, length, head_dims = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dims)


def _build_flags() -> list[str]:
    # -march=native: the cache key below includes this CPU's flags, so a kernel built for one CPU
    # is never loaded on another.
    return ['-O3', '-march=native', '-fno-math-errno', '-fno-trapping-math']


def _cache_name(source: str) -> str:
    """An extension name unique to this source, these flags, this CPU and this torch."""
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((line for line in f if line.startswith('flags')), '')
    except OSError:
        cpu = ''
    key = '\n'.join([source, ' '.join(_build_flags()), cpu, torch.__version__])
    return 'mmbixt_bidir_' + hashlib.sha1(key.encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def load_kernel() -> Optional[object]:
    """The compiled kernel op (compiled on the first call, then cached on disk by PyTorch), or
    None when it cannot be built here (a warning says why)."""
    # torch's extension builder logs a CUDA_HOME notice on import, meaningless for a CPU kernel.
    builder_log = logging.getLogger('torch.utils.cpp_extension')
    level = builder_log.level
    builder_log.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load_inline
        source = KERNEL_SOURCE.read_text()
        load_inline(name=_cache_name(source), cpp_sources=[source], functions=None,
                    extra_cflags=_build_flags(), is_python_module=False, verbose=False)
        return torch.ops.mmbixt_bidir.bidir_attention
    except Exception as exc:  # no compiler, a failed build: the portable path serves
        first_line = (str(exc).splitlines() or [''])[0][:200]
        warnings.warn(f'mmbixt: the fused bi-directional attention kernel did not build '
                      f'({type(exc).__name__}: {first_line}); using two fused-attention calls '
                      'instead (same results, slower on CPU)')
        return None
    finally:
        builder_log.setLevel(level)


def kernel_applies(*inputs: Tensor) -> bool:
    """Whether the fused kernel can serve a call on ``(r_lat, v_lat, r_tok, v_tok)`` (or any of
    them, latents first): eager CPU inference (no gradients, no tracing), one dtype (fp32 or bf16),
    head width 16, 32 or 64, unit last strides, latents a multiple of 4, and a kernel built."""
    latents, tokens = inputs[0], inputs[-1]
    # A captured graph records the portable ops.
    return (not traced(tokens) and tokens.device.type == 'cpu' and not torch.is_grad_enabled()
            and tokens.dtype in KERNEL_DTYPES and all(t.dtype == tokens.dtype for t in inputs)
            and tokens.shape[-1] in KERNEL_HEAD_DIMS and latents.shape[2] % 4 == 0
            and all(t.stride(-1) == 1 for t in inputs) and load_kernel() is not None)


def portable_attention(r_lat: Tensor, v_lat: Tensor, r_tok: Tensor, v_tok: Tensor,
                       token_mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Two fused-attention calls, one per direction; ``token_mask`` hides padding tokens from the
    latents (None: the unmasked call, bit for bit)."""
    mask = None if token_mask is None else token_mask[:, None, None, :]
    lat_read = F.scaled_dot_product_attention(r_lat, r_tok, v_tok, attn_mask=mask)
    return merge_heads(lat_read), merge_heads(F.scaled_dot_product_attention(r_tok, r_lat, v_lat))


def bidirectional_attention(r_lat: Tensor, v_lat: Tensor, r_tok: Tensor, v_tok: Tensor,
                            token_mask: Optional[Tensor] = None, kernel: str = 'portable'
                            ) -> tuple[Tensor, Tensor]:
    """``(latents' read [B, L, A], tokens' read [B, N, A])`` from references and values
    ``[B, heads, n, A/heads]`` of both sides (scale ``(A/heads)^-0.5``).

    ``token_mask`` (bool ``[B, N]``, True = a real token) hides padding from the latents' softmax
    over the tokens; the tokens' own reads are computed for every token. ``kernel``: ``'fused'``
    runs the fused kernel where it applies (``kernel_applies``), ``'portable'`` never."""
    expected = (r_tok.shape[0], r_tok.shape[2])  # [batch, tokens]
    if token_mask is not None and tuple(token_mask.shape) != expected:
        raise ValueError(f'token_mask has shape {tuple(token_mask.shape)}, expected {expected} '
                         '([batch, tokens]): one flag per token')
    if kernel != 'fused' or not kernel_applies(r_lat, v_lat, r_tok, v_tok):
        return portable_attention(r_lat, v_lat, r_tok, v_tok, token_mask)
    groups = _token_groups(r_tok)
    mask = None if token_mask is None else token_mask.to(torch.bool).contiguous()
    lat_read, tok_read = load_kernel()(r_lat, v_lat, r_tok, v_tok, mask,
                                       r_tok.shape[-1] ** -0.5, groups)
    return lat_read, tok_read


def _token_groups(r_tok: Tensor) -> int:
    """Token groups per (sample, head): enough parallel tasks for every thread (each group adds
    one partial softmax to merge, so no more than needed)."""
    tasks = r_tok.shape[0] * r_tok.shape[1]
    return max(1, -(-2 * torch.get_num_threads() // tasks))
