"""Seeding every training sample from its position in the sample stream.

mmengine seeds each dataloader worker once, when it starts; the augmentations a worker draws then
depend on everything it processed before. A resumed run starts fresh workers at iteration ``k``, so
its augmentations differ from those of the run it continues (with ``num_workers=0`` the same holds
for the main process). Here the sampler tags each index with its position in the global stream
(position ``p`` of rank ``r``'s share is ``p * world_size + r``, as InfiniteSampler deals the
stream out), and the dataset reseeds numpy, ``random`` and torch from ``(seed, position)`` before
preparing the sample. A sample's augmentation then depends only on where it sits in the stream:
the same after a resume, with any number of workers, and under any split of the global batch
over processes.
"""
from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from mmengine.dist import get_dist_info
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from .iteration_seed import iteration_seed


class PositionedSampler(Sampler):
    """Yields ``(global position, index)`` for each index of a resumable sampler (one with
    ``skip(num_samples)``, such as mmengine's InfiniteSampler)."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.rank, self.world_size = get_dist_info()
        self._consumed = 0  # indices of this rank handed out so far

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.sampler:
            position = self._consumed * self.world_size + self.rank
            self._consumed += 1
            yield position, index

    def __len__(self) -> int:
        return len(self.sampler)

    def skip(self, num_samples: int) -> None:
        self.sampler.skip(num_samples)
        self._consumed = num_samples

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)


class PositionSeededDataset(Dataset):
    """Wraps a dataset: ``dataset[(position, index)]`` reseeds numpy, ``random`` and torch from
    ``(seed, position)``, then returns ``dataset[index]``. Other attributes are the wrapped
    dataset's (``metainfo``, ...)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Any) -> Any:
        if not isinstance(item, tuple):
            return self.dataset[item]
        position, index = item
        value = iteration_seed(self.seed, position)
        np.random.seed(value)
        random.seed(value)
        torch.manual_seed(value)
        return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        if name.startswith('__') or name in ('dataset', 'seed'):  # unpickling: not set yet
            raise AttributeError(name)
        return getattr(self.dataset, name)


def seed_samples_by_position(loader: DataLoader, seed: int) -> DataLoader:
    """``loader`` rebuilt with :class:`PositionedSampler` and :class:`PositionSeededDataset`
    when its sampler is resumable and it batches with a plain BatchSampler; else ``loader``."""
    resumable = hasattr(loader.sampler, 'skip') and not isinstance(loader.sampler,
                                                                   PositionedSampler)
    if not resumable or type(loader.batch_sampler) is not BatchSampler:
        return loader
    workers = loader.num_workers
    return DataLoader(
        PositionSeededDataset(loader.dataset, seed), batch_size=loader.batch_size,
        sampler=PositionedSampler(loader.sampler), num_workers=workers,
        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
        timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if workers else None,
        persistent_workers=loader.persistent_workers if workers else False)
