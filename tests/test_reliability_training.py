"""Interrupted training loses nothing, and training is deterministic.

Three runs of ``tools/train.py`` (tiny BiXT UPerNet, random augmentations in two dataloader
workers, dropout and drop-path, AdamW, seed 0, deterministic mode) start together: two
uninterrupted ones, and one that is SIGKILLed in the middle of an iteration after its first
checkpoint. That one is then restarted with ``--resume`` beside a truncated "newest" checkpoint
that ``last_checkpoint`` names.
"""
from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from reliability_utils import (final_metrics, finish, losses_by_iter, make_tiny_data,
                               max_weight_difference, start_training, train, weights,
                               with_test_hooks, write_tiny_config)

ITERS = 8
CKPT_INTERVAL = 2
KILL_AT = 3  # iteration 3's batch is fetched; iter_2.pth is the newest checkpoint
RESUME_TOLERANCE = 1e-6  # observed: 0.0 (bitwise equal)


def wait_for(path: Path, process, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f'run ended before {path.name}:\n' + \
            process.log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, f'{path} did not appear within {timeout} s'
        time.sleep(0.1)


def plant_truncated_checkpoint(work_dir: Path, complete: Path, name: str) -> Path:
    """A half-written newer checkpoint, named in ``last_checkpoint`` (what a save cut short by a
    full disk, or a non-atomic writer killed between its writes, leaves)."""
    partial = work_dir / name
    partial.write_bytes(complete.read_bytes()[: complete.stat().st_size // 2])
    (work_dir / 'last_checkpoint').write_text(str(partial))
    return partial


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('reliability_training')
    config = write_tiny_config(root / 'tiny.py', make_tiny_data(root / 'data'), iters=ITERS,
                               ckpt_interval=CKPT_INTERVAL, workers=2)
    marker = root / 'paused'
    pause_config = with_test_hooks(root / 'tiny_pause.py', config, dict(
        type='PauseForKillHook', at_iter=KILL_AT, marker=str(marker)))
    dirs = {name: root / name for name in ('reference', 'repeat', 'interrupted')}
    processes = {name: start_training(pause_config if name == 'interrupted' else config, path)
                 for name, path in dirs.items()}
    try:
        wait_for(marker, processes['interrupted'])
        os.kill(processes['interrupted'].pid, signal.SIGKILL)
        assert processes['interrupted'].wait(timeout=60) == -signal.SIGKILL
        for name in ('reference', 'repeat'):
            finish(processes[name])
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    killed = dirs['interrupted']
    dirs['killed_copy'] = root / 'killed_copy'
    shutil.copytree(killed, dirs['killed_copy'])  # what the kill left, for the assertions
    plant_truncated_checkpoint(killed, killed / f'iter_{CKPT_INTERVAL}.pth',
                               f'iter_{2 * CKPT_INTERVAL}.pth')
    train(config, killed, ['--resume'])
    return dirs


def test_kill_left_the_checkpoint_before_it_and_nothing_after(runs):
    killed = runs['killed_copy']
    assert sorted(p.name for p in killed.glob('*.pth')) == [f'iter_{CKPT_INTERVAL}.pth']
    assert (killed / 'last_checkpoint').read_text().endswith(f'iter_{CKPT_INTERVAL}.pth')
    assert not list(killed.glob('.*.tmp')), 'a temporary checkpoint was left behind'


def test_resume_skips_the_truncated_checkpoint_and_continues_from_the_last_complete_one(runs):
    log = (runs['interrupted'].parent / 'interrupted.log').read_text()
    assert 'is incomplete; resuming from' in log and f'iter_{CKPT_INTERVAL}.pth' in log
    resumed_iters = sorted(losses_by_iter(runs['interrupted']))
    assert resumed_iters == list(range(1, ITERS + 1))  # the killed run's 1..3, then 3..8


def test_resumed_run_ends_with_the_weights_and_metrics_of_an_uninterrupted_one(runs):
    reference, resumed = runs['reference'], runs['interrupted']
    difference = max_weight_difference(weights(reference / f'iter_{ITERS}.pth'),
                                       weights(resumed / f'iter_{ITERS}.pth'))
    assert difference <= RESUME_TOLERANCE
    assert losses_by_iter(resumed) == pytest.approx(losses_by_iter(reference), rel=1e-6)
    assert final_metrics(resumed) == final_metrics(reference)


def test_two_runs_with_the_same_seed_are_identical(runs):
    reference, repeat = runs['reference'], runs['repeat']
    assert max_weight_difference(weights(reference / f'iter_{ITERS}.pth'),
                                 weights(repeat / f'iter_{ITERS}.pth')) == 0.0
    assert losses_by_iter(repeat) == losses_by_iter(reference)
    assert final_metrics(repeat) == final_metrics(reference)
