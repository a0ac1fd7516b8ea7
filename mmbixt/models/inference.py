"""The fast CPU inference path (``fast_inference``) and the compile policy (``compile_backbone``):
policy built on the kernels of :mod:`mmbixt.models.core.fast_ops`, kept out of the math."""
from __future__ import annotations

import contextlib
import weakref
from typing import Optional

import torch
from torch import nn

from ..compat import CpuCapability, self_tested
from .core.fast_ops import FUSED_BY_DEFAULT
from .precision import cpu_half_dtype
from .segmentors.postprocess import predictions_only


def fast_inference_dtype(capability: Optional[CpuCapability] = None) -> torch.dtype:
    """bf16 where the CPU multiplies bf16 natively (``CpuCapability.bf16``: AMX or AVX512-BF16 as
    oneDNN reports them), else fp32 (emulated bf16 is many times slower than fp32; said once, with
    its cost measured here, unless ``capability`` is given)."""
    if capability is not None:
        return torch.bfloat16 if capability.bf16 else torch.float32
    return cpu_half_dtype('fast_inference') or torch.float32


CONV_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}  # relative to the largest output


def channels_last_agrees(dtype: torch.dtype) -> bool:
    """Whether a channels-last convolution of ``dtype`` runs here and equals the contiguous one
    (checked once per dtype; off for good, with one log line, on an error or a mismatch)."""
    name = f'channels-last convolution ({str(dtype).replace("torch.", "")})'
    return self_tested(name, lambda: dtype in CONV_TOLERANCE,
                       lambda _: _channels_last_mismatch(dtype),
                       'convolutions keep their layout') is not None


def _channels_last_mismatch(dtype: torch.dtype) -> Optional[str]:
    generator = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1).to(dtype)
    x = torch.randn(2, 8, 9, 11, generator=generator).to(dtype)
    with torch.no_grad():
        expected = conv(x).float()
        conv.to(memory_format=torch.channels_last)
        actual = conv(x.contiguous(memory_format=torch.channels_last)).float()
    error = ((actual - expected).abs().max() / expected.abs().max()).item()
    return None if error <= CONV_TOLERANCE[dtype] else f'differs from the contiguous one by {error:.1e}'


def channels_last_convolutions(model: nn.Module,
                               dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> nn.Module:
    """Puts the weights of every 2-D convolution in ``model`` into channels-last layout, in place
    (a layout change only: the values are the same). oneDNN runs convolutions fastest in this
    layout (fp32 and bf16); the dense backbones' feature maps are channels-last already (views of
    ``[B, N, D]`` tokens), so neck and heads then run without a layout conversion. Nothing changes
    where the fused paths are off (``MMBIXT_FUSED_KERNELS=0``) or the layout's self-test (``channels_last_agrees``, for each
    dtype in ``dtypes``) failed."""
    if not FUSED_BY_DEFAULT or not all(channels_last_agrees(dtype) for dtype in dtypes):
        return model
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
                   capability: Optional[CpuCapability] = None,
                   compile: bool = False) -> contextlib.ExitStack:
    """The fast CPU inference path, one switch: ``with fast_inference(model): outputs = model(x)``.

    No gradients; predictions only (segmentors keep no full-size ``seg_logits`` unless their
    ``test_cfg.keep_seg_logits`` is True: their labels come from a fused resize and argmax);
    bf16 autocast where this CPU has native bf16 (``cpu_capability().bf16``),
    otherwise fp32 (said once) with
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
    dtype = fast_inference_dtype(capability)
    if model is not None:
        channels_last_convolutions(model, tuple(dict.fromkeys((torch.float32, dtype))))
        if compile:
            compile_backbone(model)
    stack = contextlib.ExitStack()
    stack.enter_context(torch.no_grad())
    stack.enter_context(predictions_only())
    if dtype == torch.bfloat16:
        stack.enter_context(torch.autocast('cpu', dtype=torch.bfloat16))
    return stack
