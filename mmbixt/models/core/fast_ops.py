"""Fused CPU kernels for inference. The inference policy built on them is
:mod:`mmbixt.models.inference`.

PyTorch's ``F.linear`` on the CPU runs the matmul (MKL or oneDNN, whichever ATen picks) after copying
the broadcast bias into the output, then GELU and the residual add as separate passes over
``[B, N, 4D]`` / ``[B, N, D]`` activations. oneDNN's fused linear (``torch.ops.mkldnn``, the kernel
inductor's CPU backend emits for the same pattern) does matmul + bias + GELU, or matmul + bias +
residual add, in one call. It has no autograd, so it serves inference only (no grad, no autocast);
everything else, training included, runs the plain PyTorch ops, bit for bit as before. The op is
private: ``mmbixt.compat.onednn_linear`` checks it once per dtype and falls back to ``F.linear``
for good; an error in use also switches it off for good (one log line), never reaching the caller.

What the CPU can do comes from ``mmbixt.compat.cpu_capability()`` (ATen and oneDNN, never
``/proc/cpuinfo``). ``MMBIXT_FUSED_KERNELS=0`` (read once, at import) makes ``fused=False`` the
default of ``ExecutionSettings``: the fused linears, the tiled attention kernel and (in
``fast_inference``) the channels-last layout off, the portable path every CPU can take.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...compat import ONEDNN_LINEAR_NAMES, cpu_capability, give_up, onednn_linear
from ...environment import switch
from .tracing import traced


FUSED_DTYPES = (torch.float32, torch.bfloat16)
FUSED_BY_DEFAULT = switch('MMBIXT_FUSED_KERNELS', default=True)


# ATen levels whose fp32 linears run through ATen's matmul (MKL) rather than oneDNN's fused linear:
# on the AVX2 path (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
# on the 2-core AMD EPYC, 1 thread, interleaved with the original) BiXT-Ti/16 at 512 px ran 1.17x
# and 1.40x the original with ATen's linears against 1.05x and 1.20x with oneDNN's fused ones (two
# runs); at 1024 px 1.21x and 1.34x against 1.23x and 1.38x. With AVX-512 oneDNN's are faster.
ATEN_FP32_LINEARS = ('AVX2',)


def onednn_fp32_linears() -> bool:
    """Whether fp32 linears take oneDNN's fused linear on this CPU (``ATEN_FP32_LINEARS``)."""
    return cpu_capability().aten not in ATEN_FP32_LINEARS


def fused_linear_applies(x: Tensor, layer: nn.Linear, fused: bool = True) -> bool:
    """Whether oneDNN's fused linear serves ``layer(x)``: the fused kernels on (``fused``, the
    ``ExecutionSettings`` of the core), eager CPU inference (no gradients, no autocast, no
    tracing), input in the layer's dtype with a bias, and the op's self-test for that dtype passed
    (fp32; bf16 only where the CPU has native bf16)."""
    # A captured graph (torch.compile fuses on its own; exports need the standard ops) records
    # the standard ops.
    return (fused and not traced(x) and x.device.type == 'cpu'
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled('cpu')
            and x.dtype == layer.weight.dtype and layer.bias is not None
            and (x.dtype != torch.float32 or onednn_fp32_linears())
            and onednn_linear(x.dtype) is not None)


def _fused(x: Tensor, *args) -> Optional[Tensor]:
    """The fused linear's result, or None (the caller runs the plain ops) after an error in use,
    which switches the op off for this dtype for good: no oneDNN error reaches the user."""
    try:
        return onednn_linear(x.dtype)(x, *args)
    except RuntimeError as err:
        give_up(ONEDNN_LINEAR_NAMES[x.dtype], err, 'inference uses F.linear')
        return None


def linear(x: Tensor, layer: nn.Linear, fused: bool = True) -> Tensor:
    """``layer(x)``; in CPU inference with the bias added inside the matmul (no bias copy)."""
    out = (_fused(x, layer.weight, layer.bias, 'none', [], 'none')
           if fused_linear_applies(x, layer, fused) else None)
    return layer(x) if out is None else out


def linear_gelu(x: Tensor, layer: nn.Linear, fused: bool = True) -> Tensor:
    """``GELU(layer(x))`` (exact erf GELU)."""
    out = (_fused(x, layer.weight, layer.bias, 'gelu', [], 'none')
           if fused_linear_applies(x, layer, fused) else None)
    return F.gelu(layer(x)) if out is None else out


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
        out = _fused(x, residual.contiguous(), weight, bias, 'add')
        if out is not None:
            return out
    branch = scale(layer(x))
    return residual + (branch if keep is None else branch * keep)
