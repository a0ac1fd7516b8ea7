"""Stopping a training whose loss or gradients turn non-finite, before a checkpoint keeps them.

Without it a training whose loss turns NaN logs ``nan`` to its last iteration, saves NaN weights
and exits 0. :class:`NonFiniteLossHook` checks every iteration:

- the gradients, right before the optimizer step (a torch optimizer step pre-hook): when their
  norm is not finite the step is skipped (every gradient is dropped, so no parameter, moment or
  weight decay changes). Under mixed precision, ``AmpOptimWrapper``'s loss scaler already skips
  steps with overflowing gradients, its normal way of finding a scale; those are not counted.
- the losses the model returns (``after_train_iter``'s ``outputs``).

An iteration with a non-finite loss or gradient norm is a skipped step, and it leaves no trace: the
model's buffers (BatchNorm running statistics, which the skipped step's forward pass already
updated with NaN, and any other) are put back as they were before it. A skipped step of a model
whose weights are already non-finite (an earlier step with finite gradients made them so, e.g. a
huge learning rate) cannot be ridden out and stops the training at once. More than ``max_skipped``
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

from ...checkpoint.loading import describe
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


def non_finite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers of ``model`` holding NaN or inf."""
    with torch.no_grad():
        return [name for name, value in (*model.named_parameters(), *model.named_buffers())
                if value.is_floating_point() and not bool(torch.isfinite(value).all())]


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
        self.saved_buffers: list[torch.Tensor] = []  # the model's buffers before the iteration

    def before_train(self, runner) -> None:
        wrappers = runner.optim_wrapper
        wrappers = wrappers.values() if isinstance(wrappers, OptimWrapperDict) else [wrappers]
        self.handles = [wrapper.optimizer.register_step_pre_hook(self.skip_non_finite_step)
                        for wrapper in wrappers]

    def after_train(self, runner) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.saved_buffers = []

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        with torch.no_grad():
            self.saved_buffers = [buffer.detach().clone() for buffer in runner.model.buffers()]

    def restore_buffers(self, runner) -> None:
        """Puts every buffer back as it was before the skipped iteration's forward pass."""
        with torch.no_grad():
            for buffer, saved in zip(runner.model.buffers(), self.saved_buffers):
                buffer.copy_(saved)

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
        self.restore_buffers(runner)
        broken = non_finite_parameters(runner.model)
        if self.any_rank(bool(broken)):
            raise NonFiniteTrainingError(
                f'training stopped at iteration {iteration}: the weights are already non-finite '
                f'(NaN or inf in {describe(broken) if broken else "another rank"}): an '
                'earlier step with finite gradients made them so, and skipping steps cannot undo '
                f'that ({what}). Lower the learning rate, then --resume from the newest checkpoint '
                f'({self.newest_checkpoint(runner)})')
        if self.consecutive > self.max_skipped:
            raise NonFiniteTrainingError(
                f'training stopped at iteration {iteration}: non-finite loss or gradients '
                f'({what}) in {self.consecutive} consecutive iteration(s), more than '
                f'max_skipped={self.max_skipped}; no checkpoint was written after it (newest: '
                f'{self.newest_checkpoint(runner)}). Lower the learning rate or '
                'check the data, then --resume; or allow skipped steps with '
                'custom_hooks=[dict(type="NonFiniteLossHook", max_skipped=N)]')
        runner.logger.warning(
            f'iteration {iteration}: non-finite loss or gradients ({what}); weights not updated '
            f'({self.consecutive} of at most {self.max_skipped} consecutive skipped steps)')

    @staticmethod
    def newest_checkpoint(runner) -> str:
        last = named_in_last_checkpoint(runner.work_dir)
        return osp.basename(last) if last else 'none yet'

    @staticmethod
    def any_rank(flag: bool) -> bool:
        """Whether ``flag`` is set on any process (all ranks stop together, none waits)."""
        if not is_distributed():
            return flag
        value = torch.tensor([float(flag)], device=get_device())
        all_reduce(value, op='sum')
        return bool(value.item() > 0)
