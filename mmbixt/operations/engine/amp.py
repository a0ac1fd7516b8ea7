"""``--amp`` of the tools on every machine: fp16 with a loss scaler on CUDA (mmengine's
``AmpOptimWrapper``), bf16 on a CPU with native bf16, fp32 (said in one line, with the measured
cost of bf16) on a CPU without (``mmbixt.models.precision``)."""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.optim import OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS

from ...models.precision import autocast_dtype


@OPTIM_WRAPPERS.register_module()
class CpuBf16OptimWrapper(OptimWrapper):
    """Training steps whose forward runs under bf16 autocast on the CPU (mmengine's
    ``AmpOptimWrapper`` is CUDA-only). bf16 has fp32's exponent range: no loss scaler."""

    @contextlib.contextmanager
    def optim_context(self, model: torch.nn.Module):
        with super().optim_context(model), torch.autocast('cpu', dtype=torch.bfloat16):
            yield


def amp_dtype(device: Optional[str] = None) -> Optional[torch.dtype]:
    """The half type ``--amp`` runs on ``device`` (mmengine's choice of device by default):
    fp16 on CUDA, bf16 on a CPU with native bf16, None (fp32, said once) on one without."""
    return autocast_dtype(device or get_device(), '--amp')


def enable_amp_training(cfg: Config, device: Optional[str] = None) -> None:
    """``--amp`` of tools/train.py: sets ``cfg.optim_wrapper`` for this device (unchanged, fp32,
    where half precision would cost)."""
    dtype = amp_dtype(device)
    if dtype == torch.bfloat16 and (device or get_device()) == 'cpu':
        cfg.optim_wrapper.type = 'CpuBf16OptimWrapper'
    elif dtype is not None:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
