"""Fused CPU kernels for inference, and what this CPU can do in bf16 (which decides where they
apply). The inference policy built on them is :mod:`mmbixt.models.inference`.

PyTorch's ``F.linear`` on the CPU runs the matmul (MKL or oneDNN, whichever ATen picks) after copying
the broadcast bias into the output, then GELU and the residual add as separate passes over
``[B, N, 4D]`` / ``[B, N, D]`` activations. oneDNN's fused linear (``torch.ops.mkldnn``, the kernel
inductor's CPU backend emits for the same pattern) does matmul + bias + GELU, or matmul + bias +
residual add, in one call. It has no autograd, so it serves inference only (no grad, no autocast);
everything else, training included, runs the plain PyTorch ops, bit for bit as before. The op is
private: ``mmbixt.compat.onednn_linear`` checks it once and falls back to ``F.linear`` for good.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...compat import onednn_linear
from .tracing import traced


FUSED_DTYPES = (torch.float32, torch.bfloat16)


def fused_linear_applies(x: Tensor, layer: nn.Linear, fused: bool = True) -> bool:
    """Whether oneDNN's fused linear serves ``layer(x)``: the fused kernels on (``fused``, the
    ``ExecutionSettings`` of the core), eager CPU inference (no gradients, no autocast, no
    tracing), fp32 (or bf16 where this CPU has bf16 instructions) input in the layer's dtype,
    with a bias."""
    # A captured graph (torch.compile fuses on its own; exports need the standard ops) records
    # the standard ops.
    return (fused and not traced(x) and x.device.type == 'cpu'
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled('cpu')
            and x.dtype == layer.weight.dtype and layer.bias is not None
            and (x.dtype == torch.float32
                 or (x.dtype == torch.bfloat16 and cpu_bf16_capability().native))
            and onednn_linear() is not None)


def linear(x: Tensor, layer: nn.Linear, fused: bool = True) -> Tensor:
    """``layer(x)``; in CPU inference with the bias added inside the matmul (no bias copy)."""
    if fused_linear_applies(x, layer, fused):
        return onednn_linear()(x, layer.weight, layer.bias, 'none', [], 'none')
    return layer(x)


def linear_gelu(x: Tensor, layer: nn.Linear, fused: bool = True) -> Tensor:
    """``GELU(layer(x))`` (exact erf GELU)."""
    if fused_linear_applies(x, layer, fused):
        return onednn_linear()(x, layer.weight, layer.bias, 'gelu', [], 'none')
    return F.gelu(layer(x))


def linear_residual(x: Tensor, layer: nn.Linear, residual: Tensor, scale: nn.Module,
                    keep: Optional[Tensor] = None, fused: bool = True) -> Tensor:
    """``residual + keep * scale(layer(x))``: a residual branch's output projection, LayerScale
    (``scale``: ``LayerScale`` or ``nn.Identity``) and per-sample stochastic-depth mask ``keep``.

    Fused: LayerScale folds into the weights (``g * (W x + b) = (g W) x + g b``) and the add into
    the matmul's epilogue; inference has no mask."""
    if keep is None and fused_linear_applies(x, layer, fused) and residual.dtype == x.dtype:
        weight, bias = layer.weight, layer.bias
        gamma = getattr(scale, 'gamma', None)
        if gamma is not None:
            weight, bias = weight * gamma[:, None], bias * gamma
        return onednn_linear()(x, residual.contiguous(), weight, bias, 'add')
    branch = scale(layer(x))
    return residual + (branch if keep is None else branch * keep)


# ---------------------------------------------------------------------------- CPU capability
class CpuBf16Capability:
    """What the CPU offers for bf16 matmuls: ``'amx'`` (AMX tiles), ``'avx512_bf16'`` (bf16 dot
    products), or ``'none'`` (bf16 only emulated: slower than fp32)."""

    def __init__(self, kind: str, isa: str):
        self.kind = kind  # amx | avx512_bf16 | none
        self.isa = isa    # torch.backends.cpu.get_cpu_capability()

    @property
    def native(self) -> bool:
        return self.kind != 'none'

    def __repr__(self) -> str:
        return f'CpuBf16Capability(kind={self.kind!r}, isa={self.isa!r})'


def bf16_kind(cpu_flags: set[str], isa: str) -> str:
    """The bf16 matmul kind from ``/proc/cpuinfo`` flags and PyTorch's dispatch ISA."""
    if 'amx_bf16' in cpu_flags or isa == 'AMX':
        return 'amx'
    if 'avx512_bf16' in cpu_flags:
        return 'avx512_bf16'
    return 'none'


def read_cpu_flags(path: str = '/proc/cpuinfo') -> set[str]:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:  # not Linux: PyTorch's ISA alone decides
        pass
    return set()


@functools.lru_cache(maxsize=1)
def cpu_bf16_capability() -> CpuBf16Capability:
    """This machine's bf16 capability (cached)."""
    isa = torch.backends.cpu.get_cpu_capability()
    return CpuBf16Capability(bf16_kind(read_cpu_flags(), isa), isa)
