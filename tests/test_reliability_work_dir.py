"""A failed save never costs the last complete checkpoint; one training at a time per work dir."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from mmengine.config import Config

import mmbixt  # noqa: F401  (registers)
from mmbixt.operations.engine import BiXTRunner, KeepCompleteCheckpointHook, WorkDirError, WorkDirLock
from mmbixt.operations.engine.work_dir import LOCK_NAME, find_resumable_checkpoint, is_complete_checkpoint
from reliability_utils import make_tiny_data, start_training, write_tiny_config


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('work_dir')
    return write_tiny_config(root / 'tiny.py', make_tiny_data(root / 'data'), iters=3,
                             ckpt_interval=1)


def dead_pid() -> int:
    process = subprocess.Popen(['true'])
    process.wait()
    return process.pid


# ------------------------------------------------------------ a save that fails
@pytest.mark.parametrize('max_keep', [1, 2])  # 1: mmengine would have deleted the only one
def test_a_failed_save_keeps_the_last_complete_checkpoint(tiny, tmp_path, monkeypatch, max_keep):
    import mmengine.runner.runner as mmengine_runner
    real_save = mmengine_runner.save_checkpoint
    calls = []

    def disk_full_at_third_save(checkpoint, filename, **kwargs):
        calls.append(filename)
        if len(calls) == 3:
            Path(filename).write_bytes(b'PK\x03\x04 cut short')
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_save(checkpoint, filename, **kwargs)

    monkeypatch.setattr(mmengine_runner, 'save_checkpoint', disk_full_at_third_save)
    cfg = Config.fromfile(str(tiny))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.default_hooks.checkpoint.max_keep_ckpts = max_keep
    runner = BiXTRunner.from_cfg(cfg)
    assert any(isinstance(hook, KeepCompleteCheckpointHook) for hook in runner.hooks)
    with pytest.raises(OSError, match='No space left'):
        runner.train()
    work = tmp_path / 'work'
    kept = sorted(p.name for p in work.glob('*.pth'))
    assert kept == ['iter_1.pth', 'iter_2.pth'][-max_keep:]
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')
    assert is_complete_checkpoint(str(work / 'iter_2.pth'))
    assert find_resumable_checkpoint(str(work)) == str(work / 'iter_2.pth')
    assert not (work / LOCK_NAME).exists()  # released on the way out


# ------------------------------------------------------------ the work-dir lock
def test_a_second_lock_on_the_work_dir_is_refused_naming_the_holder(tmp_path):
    first = WorkDirLock(str(tmp_path))
    assert first.acquire() is None
    with pytest.raises(WorkDirError) as error:
        WorkDirLock(str(tmp_path)).acquire()
    message = str(error.value)
    assert message.startswith(f'work dir {tmp_path} is in use by another training (pid '
                              f'{os.getpid()} on host {socket.gethostname()}')
    assert 'choose another --work-dir' in message and '\n' not in message
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    second = WorkDirLock(str(tmp_path))
    assert second.acquire() is None
    second.release()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    pid = dead_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps(dict(pid=pid, host='node7', since='x')))
    lock = WorkDirLock(str(tmp_path))
    note = lock.acquire()
    assert note == (f'{tmp_path / LOCK_NAME}: took over the lock a training that is gone left '
                    f'behind (pid {pid} on host node7 since x)')
    assert json.loads((tmp_path / LOCK_NAME).read_text())['pid'] == os.getpid()
    lock.release()


@pytest.mark.parametrize('holder, refused', [('live here', True), ('dead here', False),
                                             ('other host', True)])
def test_without_flock_the_pid_and_host_decide(tmp_path, monkeypatch, holder, refused):
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, 'No locks available')

    monkeypatch.setattr(fcntl, 'flock', no_flock)
    pid = os.getppid() if holder == 'live here' else dead_pid()
    host = 'elsewhere' if holder == 'other host' else socket.gethostname()
    (tmp_path / LOCK_NAME).write_text(json.dumps(dict(pid=pid, host=host)))
    lock = WorkDirLock(str(tmp_path))
    if refused:
        with pytest.raises(WorkDirError, match=f'in use by another training \\(pid {pid} on host '
                           f'{host}.*delete the lock file'):
            lock.acquire()
    else:
        assert 'took over' in lock.acquire()
        lock.release()


def test_train_tool_refuses_a_work_dir_another_training_holds(tiny, tmp_path):
    work = tmp_path / 'work'
    holder = WorkDirLock(str(work))
    holder.acquire()
    try:
        process = start_training(tiny, work)
        assert process.wait(timeout=300) == 1
    finally:
        holder.release()
    log = process.log_path.read_text()
    assert f'error: work dir {work} is in use by another training (pid {os.getpid()}' in log
    assert 'Iter(train)' not in log and not list(work.glob('*.pth'))


def test_a_failed_rewrite_of_last_checkpoint_is_repaired(tiny, tmp_path, monkeypatch):
    """mmengine rewrites last_checkpoint in place after each save: a full disk can leave it
    empty. It names the newest complete checkpoint again before the error goes on."""
    import builtins

    import mmengine.hooks.checkpoint_hook as mmengine_hook
    writes = []

    def disk_full_at_third_pointer(path, mode='r', *args, **kwargs):
        if str(path).endswith('last_checkpoint') and 'w' in mode:
            writes.append(path)
            if len(writes) == 3:
                open(path, 'w').close()  # truncated, then the write fails
                raise OSError(errno.ENOSPC, 'No space left on device')
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(mmengine_hook, 'open', disk_full_at_third_pointer, raising=False)
    cfg = Config.fromfile(str(tiny))
    cfg.work_dir = str(tmp_path / 'work')
    with pytest.raises(OSError, match='No space left'):
        BiXTRunner.from_cfg(cfg).train()
    work = tmp_path / 'work'
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_3.pth')
    assert is_complete_checkpoint(str(work / 'iter_3.pth'))
