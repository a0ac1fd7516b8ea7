"""What a work dir holds: complete and incomplete checkpoints, and the files of an earlier run.

- ``--resume`` without a path takes the checkpoint named in ``last_checkpoint`` only when it is
  complete, and otherwise the newest complete ``iter_*.pth`` / ``epoch_*.pth`` beside it (a file
  cut short by a full disk or copied in half never gets picked).
- a new training never writes into a work dir that holds another run's checkpoints: it continues
  that run (``--resume``), or sets its files aside on request (``--overwrite``), or stops
  (:meth:`~mmbixt.engine.runner.BiXTRunner.check_work_dir`).
"""
from __future__ import annotations

import os
import os.path as osp
import re
import shutil
import time
import zipfile
from typing import Optional

from ..checkpoint import CheckpointError, read_checkpoint

CHECKPOINT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')
BEST_NAME = re.compile(r'^best_.+\.pth$')  # CheckpointHook(save_best=...)
TEMPORARY_NAME = re.compile(r'^\..+\.(\d+)\.tmp$')  # .<name>.<pid of the writer>.tmp
LAST_CHECKPOINT = 'last_checkpoint'  # mmengine's CheckpointHook names the newest file in it


class WorkDirError(RuntimeError):
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


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint a plain ``--resume`` continues from: the one ``last_checkpoint`` names if it
    is complete, else the newest complete numbered checkpoint beside it or in ``work_dir``."""
    named = named_in_last_checkpoint(work_dir)
    folders = dict.fromkeys(([osp.dirname(named)] if named else []) + [work_dir])
    candidates = ([named] if named else []) + [
        path for folder in folders for path in numbered_checkpoints(folder)]
    return next((path for path in candidates if is_complete_checkpoint(path)), None)


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
