"""Hooks the reliability tests add to their training runs through ``custom_imports``."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class PauseForKillHook(Hook):
    """For the interrupted-training test: a known point to SIGKILL at (its batch fetched, its
    forward not yet run, the checkpoint of the previous iteration written). Writes ``marker`` and
    sleeps (up to ``timeout`` seconds) before iteration ``at_iter``."""

    def __init__(self, at_iter: int, marker: str, timeout: float = 300.0) -> None:
        self.at_iter, self.marker, self.timeout = at_iter, Path(marker), timeout

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if runner.iter == self.at_iter:
            self.marker.write_text(str(runner.iter))
            time.sleep(self.timeout)


@HOOKS.register_module()
class RecordLossHook(Hook):
    """Appends each iteration's local (this rank's) total loss to ``<work_dir>/loss_rank<r>.jsonl``:
    mmengine logs rank 0's loss only, not the mean over ranks."""

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        record = dict(iter=runner.iter + 1, loss=outputs['loss'].item())
        with open(Path(runner.work_dir) / f'loss_rank{get_rank()}.jsonl', 'a') as f:
            f.write(json.dumps(record) + '\n')


@HOOKS.register_module()
class PoisonBatchHook(Hook):
    """For the non-finite tests: replaces the images of the iterations in ``at_iters`` (1-based, as
    logged) with NaN, so that their loss and gradients are NaN."""

    def __init__(self, at_iters: list) -> None:
        self.at_iters = set(at_iters)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if runner.iter + 1 in self.at_iters:
            data_batch['inputs'] = [torch.full(image.shape, float('nan'))
                                    for image in data_batch['inputs']]
