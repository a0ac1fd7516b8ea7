"""The fast CPU inference path (``fast_inference``) and the compile policy (``compile_backbone``):
policy built on the kernels of :mod:`mmbixt.models.core.fast_ops`, kept out of the math."""
from __future__ import annotations

import contextlib
import weakref
from typing import Optional

import torch
from torch import nn

from .core.fast_ops import CpuBf16Capability, cpu_bf16_capability


def fast_inference_dtype(capability: Optional[CpuBf16Capability] = None) -> torch.dtype:
    """bf16 where the CPU multiplies bf16 natively (AMX or AVX512-BF16), else fp32 (emulated bf16
    is slower than fp32)."""
    return torch.bfloat16 if (capability or cpu_bf16_capability()).native else torch.float32


def channels_last_convolutions(model: nn.Module) -> nn.Module:
    """Puts the weights of every 2-D convolution in ``model`` into channels-last layout, in place
    (a layout change only: the values are the same). oneDNN runs convolutions fastest in this
    layout (fp32 and bf16); the dense backbones' feature maps are channels-last already (views of
    ``[B, N, D]`` tokens), so neck and heads then run without a layout conversion."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.to(memory_format=torch.channels_last)
    return model


_COMPILED: 'weakref.WeakSet[nn.Module]' = weakref.WeakSet()


def compile_backbone(model: nn.Module, backend: str = 'inductor') -> nn.Module:
    """Compiles ``model.backbone`` (``model`` itself when it has no backbone) in place with
    ``torch.compile`` (``nn.Module.compile``: parameter names and checkpoints unchanged), once per
    module. The first call at each new input size compiles (minutes on a small CPU)."""
    target = getattr(model, 'backbone', model)
    if target not in _COMPILED:
        target.compile(backend=backend)
        _COMPILED.add(target)
    return model


def fast_inference(model: Optional[nn.Module] = None, *,
                   capability: Optional[CpuBf16Capability] = None,
                   compile: bool = False) -> contextlib.ExitStack:
    """The fast CPU inference path, one switch: ``with fast_inference(model): outputs = model(x)``.

    No gradients; bf16 autocast where this CPU has bf16 matrix instructions, otherwise fp32 with
    the fused kernels above (and, opted in, the fused bi-directional attention of
    ``bidir_attention``). Given ``model`` (a segmentor, a backbone), its convolutions move to
    channels-last layout first (``channels_last_convolutions``; they stay so afterwards). With bf16, segmentation predictions
    agree with fp32 on at least 99.5% of pixels for the small test segmentor
    (tests/test_fast_inference.py); `make bench` reports the share for UPerNet-BiXT-Ti/16 with
    random weights, whose 150 near-tied logits per pixel flip more easily (97.4% at 512 px in one
    run). ``capability`` overrides the detection.

    ``compile=True`` (with ``model``) also compiles its backbone (``compile_backbone``): under
    the bf16 fast path the compiled BiXT-Ti/16 backbone ran 1.2x the eager one at 512 px in
    ``make bench``; in fp32 the two were even (docs: performance)."""
    if model is not None:
        channels_last_convolutions(model)
        if compile:
            compile_backbone(model)
    stack = contextlib.ExitStack()
    stack.enter_context(torch.no_grad())
    if fast_inference_dtype(capability) == torch.bfloat16:
        stack.enter_context(torch.autocast('cpu', dtype=torch.bfloat16))
    return stack
