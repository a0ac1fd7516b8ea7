"""Which half precision autocast uses where: bf16 on a CPU only where it is native, fp16 on CUDA.

On a CPU without native bf16 (``mmbixt.compat.cpu_capability().bf16`` False: AVX2 x86, many ARM
CPUs) every bf16 matmul is emulated: a BiXT-Ti/16 forward under bf16 autocast took 7x the fp32
time on an AVX2 EPYC, ``tools/test.py --amp`` 50x. There ``--amp``, ``fast_inference`` and the
tools' autocast run fp32 instead and say so in one line, with the cost measured on this machine.
On CUDA ``--amp`` is fp16 (training with mmengine's dynamic loss scaler); bf16 there is a config
choice (``optim_wrapper.dtype='bfloat16'`` on an Ampere or newer GPU, docs/gpu.md).
"""
from __future__ import annotations

import functools
import logging
import statistics
import time
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.logging import print_log

from ..compat import cpu_capability

_SAID: set[str] = set()


@functools.lru_cache(maxsize=1)
def emulated_bf16_cost() -> float:
    """How many times slower a 256x256 bf16 linear runs than the fp32 one here (medians of three
    calls each, interleaved; a few milliseconds)."""
    operands = {dtype: (torch.randn(256, 256).to(dtype), torch.randn(256, 256).to(dtype))
                for dtype in (torch.float32, torch.bfloat16)}
    times = {dtype: [] for dtype in operands}
    with torch.no_grad():
        for _ in range(4):
            for dtype, (x, weight) in operands.items():
                start = time.perf_counter()
                F.linear(x, weight)
                times[dtype].append(time.perf_counter() - start)
    median = {dtype: statistics.median(values[1:]) for dtype, values in times.items()}
    return median[torch.bfloat16] / max(median[torch.float32], 1e-9)


def cpu_half_dtype(purpose: str) -> Optional[torch.dtype]:
    """bf16 where this CPU has native bf16; None (run fp32) elsewhere, said once per ``purpose``
    (e.g. ``'--amp'``) in one line with the measured cost of bf16 here."""
    capability = cpu_capability()
    if capability.bf16:
        return torch.bfloat16
    if purpose not in _SAID:
        _SAID.add(purpose)
        print_log(f'{purpose}: this CPU ({capability.label()}) has no native bf16 (a bf16 matmul '
                  f'measured {emulated_bf16_cost():.0f}x slower than fp32 here); running fp32',
                  logger='current', level=logging.WARNING)
    return None


def autocast_dtype(device_type: str, purpose: str) -> Optional[torch.dtype]:
    """The half type autocast uses on ``device_type`` for ``purpose``, or None for fp32: bf16 on
    a CPU with native bf16 (``cpu_half_dtype``), fp16 on CUDA and other accelerators."""
    if device_type == 'cpu':
        return cpu_half_dtype(purpose)
    return torch.float16
