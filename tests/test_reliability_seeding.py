"""A training sample's random numbers depend on its stream position only
(mmbixt.operations.engine.sample_seed)."""
from __future__ import annotations

import itertools

import numpy as np
from mmengine.dataset import InfiniteSampler
from torch.utils.data import DataLoader

from mmbixt.operations.engine.sample_seed import (PositionedSampler, PositionSeededDataset,
                                       seed_samples_by_position)


class RandomDraws:
    """A dataset whose items are random draws, as an augmentation makes them."""

    metainfo = dict(classes=('a',))

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int) -> tuple[int, float]:
        return index, float(np.random.random())


def first(iterable, count: int) -> list:
    return list(itertools.islice(iterable, count))


def test_positions_continue_after_skip():
    sampler = PositionedSampler(InfiniteSampler(RandomDraws(), shuffle=True, seed=3))
    stream = first(sampler, 10)
    resumed = PositionedSampler(InfiniteSampler(RandomDraws(), shuffle=True, seed=3))
    resumed.skip(6)
    assert [position for position, _ in stream] == list(range(10))
    assert first(resumed, 4) == stream[6:]


def test_a_sample_draws_the_same_numbers_whatever_came_before():
    dataset = PositionSeededDataset(RandomDraws(), seed=0)
    np.random.seed(123)  # history that must not matter
    once = dataset[(7, 2)]
    np.random.random(1000)
    assert dataset[(7, 2)] == once
    assert dataset[(8, 2)] != once  # another position, other numbers
    assert dataset.metainfo == RandomDraws.metainfo


def test_workers_do_not_change_the_draws():
    def draws(workers: int, skip: int = 0) -> list:
        loader = DataLoader(RandomDraws(), batch_size=2, num_workers=workers,
                            sampler=InfiniteSampler(RandomDraws(), seed=0), collate_fn=list)
        loader = seed_samples_by_position(loader, seed=0)
        loader.sampler.skip(skip)
        return first(iter(loader), 3)

    uninterrupted = draws(workers=0)
    assert draws(workers=2) == uninterrupted
    assert draws(workers=2, skip=2) == uninterrupted[1:] + draws(workers=0, skip=6)[:1]


def test_loaders_without_a_resumable_sampler_are_left_alone():
    loader = DataLoader(RandomDraws(), batch_size=2)
    assert seed_samples_by_position(loader, seed=0) is loader
