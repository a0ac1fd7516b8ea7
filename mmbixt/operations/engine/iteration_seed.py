"""Per-iteration reseeding, so that a resumed run draws the same random numbers as one that never
stopped.

mmengine seeds the random generators once, at start-up, and does not store their states in
checkpoints; a run resumed at iteration ``k`` therefore draws different augmentations and dropout
masks from iteration ``k`` on than the run it continues. Here the generators are reseeded from
``(seed, iteration[, rank])`` before every iteration, so what iteration ``k`` draws depends on
nothing else:

- numpy and ``random`` (the data pipeline, when it runs in the main process, ``num_workers=0``)
  are reseeded before the batch of iteration ``k`` is fetched: at the start of training, after each
  iteration and after each validation;
- torch (dropout, drop-path) is reseeded right before the forward pass of iteration ``k``.

The data pipeline of resumable (infinite) training loaders is seeded per sample instead, in the
workers too (:mod:`~mmbixt.operations.engine.sample_seed`); the numpy/``random`` reseeding here covers the
main process for the rest.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


def iteration_seed(seed: int, iteration: int) -> int:
    """A 32-bit seed that depends only on the run's seed and the iteration (or sample position)."""
    return int(np.random.SeedSequence([seed % 2**32, iteration]).generate_state(1)[0])


@HOOKS.register_module()
class IterationSeedHook(Hook):
    """Reseeds numpy/random before each batch is fetched and torch before each forward pass, from
    ``(runner.seed, iteration)``. With ``randomness.diff_rank_seed`` mmengine's ``runner.seed``
    is already the run's seed plus the rank, so each process draws its own numbers.

    Registered by :class:`~mmbixt.operations.engine.BiXTRunner` with the lowest priority, so that it runs after
    every other hook of the same stage (after the checkpoint is written, right before the data)."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self._training = False  # validation inside training reseeds; a val-only run does not

    @staticmethod
    def seed_for(runner, iteration: int) -> int:
        return iteration_seed(runner.seed if runner.seed is not None else 0, iteration)

    def _seed_data(self, runner, iteration: int) -> None:
        value = self.seed_for(runner, iteration)
        np.random.seed(value)
        random.seed(value)

    def before_train(self, runner) -> None:
        self._training = True

    def after_train(self, runner) -> None:
        self._training = False

    def before_train_epoch(self, runner) -> None:
        self._seed_data(runner, runner.iter)  # 0, or the iteration a resumed run starts at

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._seed_data(runner, runner.iter + 1)  # runner.iter is still the finished iteration

    def after_val(self, runner) -> None:
        if self._training:
            self._seed_data(runner, runner.iter)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        # Seeded after the batch is fetched: creating the dataloader iterator draws from torch.
        # + 1: not the numpy seed, so that the numpy and torch streams stay distinct
        torch.manual_seed(self.seed_for(runner, runner.iter) + 1)
