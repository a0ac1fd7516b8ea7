"""Checkpoints are written atomically, and ``--resume`` only ever picks a complete one."""
from __future__ import annotations

from pathlib import Path

import os
import subprocess

import pytest
import torch
from mmengine.config import Config

import mmbixt  # noqa: F401  (registers)
from mmbixt.operations.engine import BiXTRunner, build_runner
from mmbixt.operations.engine.work_dir import (find_resumable_checkpoint, is_complete_checkpoint,
                                    remove_orphaned_temporaries)
from reliability_utils import make_tiny_data, weights, write_tiny_config


def save_small(path: Path) -> Path:
    torch.save({'state_dict': {'w': torch.arange(1000.0)}, 'meta': {}}, path)
    return path


def truncate_copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes()[: source.stat().st_size * 2 // 3])
    return target


@pytest.fixture
def work_dir(tmp_path) -> Path:
    save_small(tmp_path / 'iter_2.pth')
    save_small(tmp_path / 'iter_4.pth')
    return tmp_path


def test_truncated_and_empty_files_are_incomplete(work_dir):
    assert is_complete_checkpoint(str(work_dir / 'iter_4.pth'))
    assert not is_complete_checkpoint(str(truncate_copy(work_dir / 'iter_4.pth',
                                                        work_dir / 'cut.pth')))
    (work_dir / 'empty.pth').write_bytes(b'')
    assert not is_complete_checkpoint(str(work_dir / 'empty.pth'))
    assert not is_complete_checkpoint(str(work_dir / 'missing.pth'))


def test_resume_takes_the_complete_checkpoint_last_checkpoint_names(work_dir):
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
    assert find_resumable_checkpoint(str(work_dir)) == str(work_dir / 'iter_2.pth')


@pytest.mark.parametrize('last_checkpoint', ['names_truncated', 'empty', 'absent'])
def test_resume_never_takes_a_truncated_newest_checkpoint(work_dir, last_checkpoint):
    newest = truncate_copy(work_dir / 'iter_4.pth', work_dir / 'iter_6.pth')
    (work_dir / '.iter_8.pth.123.tmp').write_bytes(b'PK\x03\x04 half')  # a killed atomic save
    if last_checkpoint == 'names_truncated':
        (work_dir / 'last_checkpoint').write_text(str(newest))
    elif last_checkpoint == 'empty':  # killed while mmengine rewrote it
        (work_dir / 'last_checkpoint').write_text('')
    assert find_resumable_checkpoint(str(work_dir)) == str(work_dir / 'iter_4.pth')


def test_nothing_to_resume_from(tmp_path):
    truncate_copy(save_small(tmp_path / 'x.pth'), tmp_path / 'iter_2.pth')
    assert find_resumable_checkpoint(str(tmp_path)) is None


@pytest.fixture(scope='module')
def runner(tmp_path_factory) -> BiXTRunner:
    root = tmp_path_factory.mktemp('atomic')
    config = write_tiny_config(root / 'tiny.py', make_tiny_data(root / 'data'))
    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(root / 'work')
    built = build_runner(cfg)
    assert isinstance(built, BiXTRunner)
    return built


def save(runner: BiXTRunner, filename: str) -> Path:
    runner.save_checkpoint(runner.work_dir, filename, save_optimizer=False,
                           save_param_scheduler=False, by_epoch=False)
    return Path(runner.work_dir) / filename


def test_save_writes_the_whole_file_and_no_temporary(runner):
    path = save(runner, 'iter_1.pth')
    assert is_complete_checkpoint(str(path))
    assert weights(path).keys() == runner.model.state_dict().keys()
    assert not list(Path(runner.work_dir).glob('.*.tmp'))


def test_a_save_that_dies_midway_leaves_the_previous_file_untouched(runner, monkeypatch):
    previous = save(runner, 'iter_2.pth')
    before = previous.read_bytes()

    def dies_midway(checkpoint, filename, **kwargs):
        Path(filename).write_bytes(before[: len(before) // 2])
        raise KeyboardInterrupt('killed while writing')

    monkeypatch.setattr('mmengine.runner.runner.save_checkpoint', dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save(runner, 'iter_2.pth')  # overwrite in place: the old file must survive whole
    with pytest.raises(KeyboardInterrupt):
        save(runner, 'iter_3.pth')  # a new name must not appear half-written
    assert previous.read_bytes() == before
    assert not (Path(runner.work_dir) / 'iter_3.pth').exists()
    assert not list(Path(runner.work_dir).glob('.*.tmp'))


def test_temporaries_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    writer = subprocess.Popen(['true'])
    writer.wait()  # its pid no longer runs: a writer killed mid-save
    orphan = tmp_path / f'.iter_8.pth.{writer.pid}.tmp'
    live = tmp_path / f'.iter_9.pth.{os.getpid()}.tmp'
    for path in (orphan, live):
        path.write_bytes(b'PK\x03\x04 half')
    assert remove_orphaned_temporaries(str(tmp_path)) == [str(orphan)]
    assert live.exists() and not orphan.exists()


def test_runner_type_in_the_config_is_honoured(tmp_path):
    config = write_tiny_config(tmp_path / 'tiny.py', tmp_path / 'unused')
    cfg = Config.fromfile(str(config))
    cfg.work_dir, cfg.runner_type = str(tmp_path / 'work'), 'Runner'
    runner = build_runner(cfg)
    assert type(runner).__name__ == 'Runner'
