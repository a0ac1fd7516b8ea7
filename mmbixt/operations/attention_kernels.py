"""Which kernel PyTorch's ``scaled_dot_product_attention`` picks for BiXT's attention calls: a
diagnostic (``tools/gpu_check.py`` prints it next to what the profiler saw; docs/gpu.md explains
it), not used by the models."""
from __future__ import annotations

import torch

def sdpa_kernel(device_type: str, dtype: torch.dtype, head_dims: int,
                has_mask: bool = False) -> str:
    """Which kernel PyTorch's ``scaled_dot_product_attention`` (torch 2.x) picks for our calls
    (no mask, no dropout, q/k/v of one head width), in its default priority order.

    CUDA: ``'flash'`` (FlashAttention-2: fp16/bf16, head width a multiple of 8 up to 256, no mask),
    else ``'efficient'`` (memory-efficient: also fp32 and masks, head width a multiple of 8 for
    half types / 4 for fp32), else ``'math'`` (materialises the attention matrix).
    CPU: ``'flash_cpu'`` (a blocked kernel for fp32/bf16/fp16), else ``'math'``. docs/gpu.md
    explains the choice for each direction of BiXT's cross-attention."""
    half = dtype in (torch.float16, torch.bfloat16)
    if device_type == 'cpu':
        return 'flash_cpu' if half or dtype == torch.float32 else 'math'
    if device_type != 'cuda':
        return 'math'
    if half and not has_mask and head_dims % 8 == 0 and head_dims <= 256:
        return 'flash'
    if dtype in (torch.float32, torch.float16, torch.bfloat16) and head_dims % (8 if half else 4) == 0:
        return 'efficient'
    return 'math'


def cross_attention_kernels(attn_dims: int, num_heads: int, device_type: str,
                            dtype: torch.dtype) -> dict[str, str]:
    """The SDPA kernel of each BiXT attention call: both directions of the cross-attention and the
    latent self-attention (all unmasked, one head width ``attn_dims // num_heads``)."""
    kernel = sdpa_kernel(device_type, dtype, attn_dims // num_heads)
    return {'latents_read_tokens': kernel, 'tokens_read_latents': kernel,
            'latent_self_attention': kernel}
