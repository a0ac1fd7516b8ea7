"""Two CPU processes (torchrun, gloo, ``--launcher pytorch``) with batch 1 each train like one
process with batch 2.

What makes the two comparable, and why the config is as it is:
- data order: InfiniteSampler gives rank r the items r, r+2, ... of the same shuffled stream, so
  each global batch holds the same two images in both layouts;
- random augmentations line up: BiXTRunner seeds each sample from its position in the global
  stream, whichever process prepares it. Dropout and drop-path do not (each process draws masks
  for its own share of the batch), so the model has none;
- GroupNorm instead of BN: BN statistics of one image per process differ from those of two
  (SyncBN would fix that, but torch's SyncBatchNorm runs on GPUs only);
- equal image sizes and ``avg_non_ignore=False``: the loss is a mean over all pixels, so the mean
  of the per-process means DDP's gradient averaging computes equals the batch-2 mean;
- SGD, not AdamW: Adam's first steps are lr * sign(grad), so rounding noise in a near-zero
  gradient can flip a whole step.
What remains is floating-point summation order (per-image vs batched kernels, the all-reduce).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reliability_utils import (SGD, final_metrics, finish, make_tiny_data, max_weight_difference,
                               start_training, weights, with_test_hooks, write_tiny_config)

ITERS = 4
LOSS_RTOL = 1e-5  # observed: about 1e-7
WEIGHT_ATOL = 1e-5  # observed: about 1e-7 (weights are O(0.1))
METRIC_ATOL = 0.01  # percentages as logged (2 decimals): equal predictions


def rank_losses(work_dir: Path, rank: int) -> list[float]:
    lines = (work_dir / f'loss_rank{rank}.jsonl').read_text().splitlines()
    return [json.loads(line)['loss'] for line in lines]


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('reliability_distributed')
    data = make_tiny_data(root / 'data')
    configs = {
        name: with_test_hooks(root / f'{name}_hooks.py', write_tiny_config(
            root / f'{name}.py', data, iters=ITERS, ckpt_interval=1, batch_size=batch_size,
            dropout=0.0, optimizer=SGD), dict(type='RecordLossHook'))
        for name, batch_size in (('single', 2), ('ddp', 1))}
    dirs = {name: root / name for name in configs}
    processes = [start_training(configs['single'], dirs['single']),
                 start_training(configs['ddp'], dirs['ddp'], nproc=2)]
    for process in processes:
        finish(process)
    return dirs


def test_ddp_losses_are_the_mean_of_what_one_process_computes_for_the_whole_batch(runs):
    single = rank_losses(runs['single'], 0)
    per_rank = [rank_losses(runs['ddp'], rank) for rank in (0, 1)]
    ddp = [(a + b) / 2 for a, b in zip(*per_rank)]
    assert len(single) == len(ddp) == ITERS
    assert per_rank[0] != per_rank[1]  # the ranks did see different images
    assert ddp == pytest.approx(single, rel=LOSS_RTOL)


def test_ddp_ends_with_the_weights_and_metrics_of_one_process(runs):
    difference = max_weight_difference(weights(runs['single'] / f'iter_{ITERS}.pth'),
                                       weights(runs['ddp'] / f'iter_{ITERS}.pth'))
    assert difference <= WEIGHT_ATOL
    trained = max_weight_difference(weights(runs['single'] / 'iter_1.pth'),
                                    weights(runs['single'] / f'iter_{ITERS}.pth'))
    assert trained > 1000 * WEIGHT_ATOL  # the weights did move: the comparison means something
    single, ddp = final_metrics(runs['single']), final_metrics(runs['ddp'])
    assert ddp == pytest.approx(single, abs=METRIC_ATOL)
