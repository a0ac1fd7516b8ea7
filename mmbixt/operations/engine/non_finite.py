"""Stopping a training whose loss or gradients turn non-finite, before a checkpoint keeps them.

Without it a training whose loss turns NaN logs ``nan`` to its last iteration, saves NaN weights
and exits 0. :class:`NonFiniteLossHook` checks every iteration:

- the gradients, right before the optimizer step (a torch optimizer step pre-hook): when their
  norm is not finite the step is skipped (every gradient is dropped, so no parameter, moment or
  weight decay changes). Under mixed precision, ``AmpOptimWrapper``'s loss scaler already skips
  steps with overflowing gradients, its normal way of finding a scale; those are not counted.
- the losses the model returns (``after_train_iter``'s ``outputs``).

An iteration with a non-finite loss or gradient norm is a skipped step. More than ``max_skipped``
skipped steps in a row stop the training with :class:`NonFiniteTrainingError`, naming the
iteration, before the checkpoint hook of that iteration runs: the newest checkpoint is the last one
written before it.
"""
from __future__ import annotations

import math
import os.path as osp
from typing import Optional

import torch
from mmengine.device import get_device
from mmengine.dist import all_reduce, is_distributed
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapperDict
from mmseg.registry import HOOKS

from ...errors import MMBiXTError
from .work_dir import named_in_last_checkpoint


class NonFiniteTrainingError(MMBiXTError, RuntimeError):
    """A training stopped because its loss or gradients turned NaN or infinite."""


def non_finite_values(outputs: Optional[dict]) -> dict[str, float]:
    """The entries of a train step's log variables that are losses and not finite."""
    losses = {name: value for name, value in (outputs or {}).items()
              if 'loss' in name and torch.is_tensor(value)} if isinstance(outputs, dict) else {}
    if not losses:
        return {}
    values = torch.stack([value.detach().float().mean() for value in losses.values()]).tolist()
    return {name: value for name, value in zip(losses, values) if not math.isfinite(value)}


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stops training when the loss or the gradient norm is NaN/inf for more than
    ``max_skipped`` consecutive iterations; a step with non-finite gradients leaves the weights
    unchanged.

    Args:
        max_skipped: how many consecutive non-finite iterations are skipped (with a warning)
            before the training stops; 0 stops at the first one.
    """

    priority = 'ABOVE_NORMAL'  # before the logger and the checkpoint hook of the iteration

    def __init__(self, max_skipped: int = 0) -> None:
        if max_skipped < 0:
            raise ValueError(f'max_skipped must be >= 0, got {max_skipped}')
        self.max_skipped = max_skipped
        self.consecutive = 0
        self.skipped_gradient_norm: Optional[float] = None  # of the current iteration
        self.handles = []

    def before_train(self, runner) -> None:
        wrappers = runner.optim_wrapper
        wrappers = wrappers.values() if isinstance(wrappers, OptimWrapperDict) else [wrappers]
        self.handles = [wrapper.optimizer.register_step_pre_hook(self.skip_non_finite_step)
                        for wrapper in wrappers]

    def after_train(self, runner) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def skip_non_finite_step(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        """Drops every gradient when their norm is not finite: the optimizer then skips all
        parameters (torch optimizers leave parameters without a gradient untouched)."""
        grads = [p.grad for group in optimizer.param_groups for p in group['params']
                 if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False)
        if torch.isfinite(norm):
            return
        self.skipped_gradient_norm = norm.item()
        for group in optimizer.param_groups:
            for param in group['params']:
                param.grad = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        bad = non_finite_values(outputs)
        if self.skipped_gradient_norm is not None:
            bad['gradient norm'] = self.skipped_gradient_norm
        self.skipped_gradient_norm = None
        if self.any_rank(bool(bad)):
            self.consecutive += 1
        else:
            self.consecutive = 0
            return
        iteration = runner.iter + 1  # as the log counts
        what = ', '.join(f'{name}={value}' for name, value in bad.items()) or 'on another rank'
        if self.consecutive > self.max_skipped:
            last = named_in_last_checkpoint(runner.work_dir)
            raise NonFiniteTrainingError(
                f'training stopped at iteration {iteration}: non-finite loss or gradients '
                f'({what}) in {self.consecutive} consecutive iteration(s), more than '
                f'max_skipped={self.max_skipped}; no checkpoint was written after it (newest: '
                f'{osp.basename(last) if last else "none yet"}). Lower the learning rate or '
                'check the data, then --resume; or allow skipped steps with '
                'custom_hooks=[dict(type="NonFiniteLossHook", max_skipped=N)]')
        runner.logger.warning(
            f'iteration {iteration}: non-finite loss or gradients ({what}); weights not updated '
            f'({self.consecutive} of at most {self.max_skipped} consecutive skipped steps)')

    @staticmethod
    def any_rank(flag: bool) -> bool:
        """Whether ``flag`` is set on any process (all ranks stop together, none waits)."""
        if not is_distributed():
            return flag
        value = torch.tensor([float(flag)], device=get_device())
        all_reduce(value, op='sum')
        return bool(value.item() > 0)
