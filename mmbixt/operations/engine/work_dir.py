"""What a work dir holds: complete and incomplete checkpoints, and the files of an earlier run.

- ``--resume`` without a path takes the checkpoint named in ``last_checkpoint`` only when it is
  complete, and otherwise the newest complete ``iter_*.pth`` / ``epoch_*.pth`` beside it (a file
  cut short by a full disk or copied in half never gets picked).
- a new training never writes into a work dir that holds another run's checkpoints: it continues
  that run (``--resume``), or sets its files aside on request (``--overwrite``), or stops
  (:meth:`~mmbixt.operations.engine.runner.BiXTRunner.check_work_dir`).
- a training holds the work dir's lock (:class:`WorkDirLock`) for its whole life: a second training
  on the same work dir is refused; the lock of a killed run is taken over.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import os.path as osp
import re
import socket
import shutil
import time
import zipfile
from typing import Optional

from ...checkpoint import CheckpointError, read_checkpoint
from ...errors import MMBiXTError
from ..fileio import TEMPORARY_NAME, atomic_write

CHECKPOINT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')
BEST_NAME = re.compile(r'^best_.+\.pth$')  # CheckpointHook(save_best=...)
LAST_CHECKPOINT = 'last_checkpoint'  # mmengine's CheckpointHook names the newest file in it
LOCK_NAME = '.training.lock'


class WorkDirError(MMBiXTError, RuntimeError):
    """A work dir a training must not write into; the message names it and the way out."""


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` holds a whole checkpoint. A ``torch.save`` zip ends with its central
    directory, so a truncated one does not open; any other file must load."""
    if not osp.isfile(path) or osp.getsize(path) == 0:
        return False
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith('/data.pkl') for name in archive.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
    try:
        read_checkpoint(path)
    except CheckpointError:
        return False
    return True


def named_in_last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``<work_dir>/last_checkpoint`` names, if any."""
    try:
        with open(osp.join(work_dir, LAST_CHECKPOINT)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def numbered_checkpoints(folder: str) -> list[str]:
    """``iter_N.pth`` / ``epoch_N.pth`` in ``folder``, newest (largest N) first."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = [(int(m.group(1)), name) for name in names if (m := CHECKPOINT_NAME.match(name))]
    return [osp.join(folder, name) for _, name in sorted(found, reverse=True)]


def checkpoint_folder(work_dir: str, checkpoint_cfg: Optional[dict]) -> str:
    """Where the checkpoint hook writes: ``<out_dir>/<work dir's name>`` when the hook names an
    ``out_dir`` (mmengine's rule), else the work dir."""
    out_dir = (checkpoint_cfg or {}).get('out_dir') if isinstance(checkpoint_cfg, dict) else None
    if not out_dir:
        return work_dir
    return osp.join(os.fspath(out_dir), osp.basename(work_dir.rstrip(os.sep)))


def _same_folder(a: str, b: str) -> bool:
    return osp.realpath(a) == osp.realpath(b)


def find_resumable_checkpoint(work_dir: str, folder: Optional[str] = None) -> Optional[str]:
    """The checkpoint a plain ``--resume`` continues from: the one ``last_checkpoint`` names if it
    is complete and lies in the run's checkpoint ``folder`` (default: the work dir), else the
    newest complete numbered checkpoint there. A ``last_checkpoint`` naming a file elsewhere (a
    copied or moved work dir names the original's) is not followed: the copy resumes from its own
    files."""
    folder = folder or work_dir
    named = named_in_last_checkpoint(work_dir)
    own = []
    if named:
        own = [named if _same_folder(osp.dirname(named), folder)
               else osp.join(folder, osp.basename(named))]
    candidates = own + numbered_checkpoints(folder)
    return next((path for path in candidates if is_complete_checkpoint(path)), None)


def repair_last_checkpoint(work_dir: str, folder: Optional[str] = None) -> None:
    """Makes ``last_checkpoint`` name the newest complete checkpoint when it names none that is
    complete (mmengine rewrites it in place: a full disk can leave it empty). Written atomically;
    left as it is when even that fails."""
    named = named_in_last_checkpoint(work_dir)
    if named and is_complete_checkpoint(named):
        return
    newest = find_resumable_checkpoint(work_dir, folder)
    if newest is None:
        return
    with contextlib.suppress(OSError), atomic_write(osp.join(work_dir, LAST_CHECKPOINT)) as tmp:
        with open(tmp, 'w') as f:
            f.write(newest)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_orphaned_temporaries(folder: str) -> list[str]:
    """Deletes the temporary checkpoints in ``folder`` whose writer is gone (killed mid-save);
    returns their paths."""
    orphans = [osp.join(folder, name) for name in os.listdir(folder)
               if (m := TEMPORARY_NAME.match(name)) and not _process_exists(int(m.group(1)))]
    for path in orphans:
        os.remove(path)
    return orphans


def earlier_run_files(work_dir: str) -> list[str]:
    """The files mmengine's CheckpointHook writes (``iter_N.pth``, ``epoch_N.pth``,
    ``best_*.pth``, ``last_checkpoint``) that an earlier training left in ``work_dir``, by name."""
    try:
        names = os.listdir(work_dir)
    except OSError:
        return []
    return sorted(name for name in names if name == LAST_CHECKPOINT
                  or CHECKPOINT_NAME.match(name) or BEST_NAME.match(name))


def set_aside_earlier_run(work_dir: str, names: list[str]) -> str:
    """Moves ``names`` (an earlier run's checkpoints) into ``<work_dir>/superseded_<time>/``, where
    ``--resume`` does not look; nothing is deleted. Returns that folder."""
    folder = osp.join(work_dir, time.strftime('superseded_%Y%m%d_%H%M%S'))
    os.makedirs(folder, exist_ok=True)
    for name in names:
        shutil.move(osp.join(work_dir, name), osp.join(folder, name))
    return folder


def describe_holder(record: dict) -> str:
    """``pid 123 on host gpu7 since 2026-12-01 12:00:00`` from a lock file's record."""
    return (f"pid {record.get('pid', '?')} on host {record.get('host', '?')}"
            + (f" since {record['since']}" if record.get('since') else ''))


class WorkDirLock:
    """The lock a training holds on its work dir from start to end: ``<work_dir>/.training.lock``,
    an exclusive ``flock`` (the kernel drops it when its process dies, even by SIGKILL) on a file
    naming the holder (pid, host, start time). Where the file system offers no ``flock``, a lock
    whose holder is a pid that no longer runs on this host counts as stale."""

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.path = osp.join(work_dir, LOCK_NAME)
        self.fd: Optional[int] = None

    def acquire(self) -> Optional[str]:
        """Takes the lock; returns a note when it took over a killed run's lock. Raises
        :class:`WorkDirError` naming the holder when another training holds it."""
        os.makedirs(self.work_dir, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            earlier = self.read_record(fd)
            try:
                self.lock_file(fd, earlier)
            except BaseException:
                os.close(fd)
                raise
            if self.same_file(fd):  # not unlinked by a releasing holder meanwhile
                break
            os.close(fd)
        self.fd = fd
        self.write_record(fd)
        if earlier and earlier.get('pid') != os.getpid():
            return (f'{self.path}: took over the lock a training that is gone left behind '
                    f'({describe_holder(earlier)})')
        return None

    def lock_file(self, fd: int, earlier: dict) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self.in_use(earlier) from None
        except OSError as err:  # no flock here (some network file systems): judge by the record
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            if earlier and not self.is_stale(earlier):
                raise self.in_use(earlier) from None

    @staticmethod
    def is_stale(record: dict) -> bool:
        """Without flock: a holder on this host whose pid is gone (another host's is unknown)."""
        pid = record.get('pid')
        return (record.get('host') == socket.gethostname() and isinstance(pid, int)
                and pid != os.getpid() and not _process_exists(pid))

    def in_use(self, record: dict) -> WorkDirError:
        return WorkDirError(
            f'work dir {self.work_dir} is in use by another training ({describe_holder(record)}, '
            f'lock {self.path}); wait for it to end or choose another --work-dir (if that run is '
            'gone for sure, delete the lock file)')

    def same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    @staticmethod
    def read_record(fd: int) -> dict:
        text = os.pread(fd, 4096, 0).decode('utf-8', 'replace')
        try:
            record = json.loads(text)
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    @staticmethod
    def write_record(fd: int) -> None:
        record = dict(pid=os.getpid(), host=socket.gethostname(),
                      since=time.strftime('%Y-%m-%d %H:%M:%S'))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)

    def release(self) -> None:
        """Deletes the lock file (while still holding it, so no waiting run locks a dead file)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.remove(self.path)
        os.close(self.fd)  # drops the flock
        self.fd = None
