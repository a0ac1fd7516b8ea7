"""Writing files so that a file under its final name is always complete."""
from __future__ import annotations

import contextlib
import os
import os.path as osp
import re
from typing import Iterator

from ..errors import MMBiXTError


class OutputPathError(MMBiXTError, ValueError):
    """An output folder that cannot be one; the message names the setting and the path."""


def check_output_dir(path: str, setting: str) -> None:
    """Refuses an output folder that is a file, or lies below one (``os.makedirs`` would say
    only "File exists" or "Not a directory"), naming ``setting`` (e.g. ``--out-dir``)."""
    current = osp.abspath(path)
    while not osp.exists(current) and osp.dirname(current) != current:
        current = osp.dirname(current)
    if not osp.isdir(current):
        where = '' if current == osp.abspath(path) else f' ({path} would lie inside it)'
        raise OutputPathError(f'{setting} {path}: {current} is a file, not a folder{where}; '
                              f'choose another {setting} or move the file away')


# The temporary beside the target: ``.<name>.<pid of the writer>.tmp``.
TEMPORARY_NAME = re.compile(r'^\..+\.(\d+)\.tmp$')


def temporary_path(path: str) -> str:
    """Where :func:`atomic_write` writes ``path`` before moving it into place."""
    folder, name = osp.split(osp.abspath(path))
    return osp.join(folder, f'.{name}.{os.getpid()}.tmp')


def fsync(path: str, directory: bool = False) -> None:
    """Flushes a file, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[str]:
    """Yields a temporary path beside ``path`` to write to; on success the temporary is flushed
    and renamed to ``path`` (an atomic replace), on error removed. A reader, or a process killed
    mid-write, never sees a partial file under ``path``."""
    final = osp.abspath(path)
    os.makedirs(osp.dirname(final), exist_ok=True)
    tmp = temporary_path(final)
    try:
        yield tmp
        fsync(tmp)
        os.replace(tmp, final)
        fsync(osp.dirname(final), directory=True)  # the rename itself reaches the disk
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
