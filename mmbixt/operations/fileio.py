"""Writing files so that a file under its final name is always complete."""
from __future__ import annotations

import contextlib
import os
import os.path as osp
import re
from typing import Iterable, Iterator

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


def _inside(path: str, folder: str) -> bool:
    path, folder = osp.realpath(path), osp.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_path(path: str, setting: str, *, folder: bool, overwrite: bool = False,
                      inputs: Iterable[str] = (), data_folders: Iterable[str] = ()) -> None:
    """Refuses an output that would replace what the user did not ask to replace: one of the
    tool's ``inputs`` (a checkpoint, a config, an image) or anything inside ``data_folders`` (a
    dataset's images and label maps), whatever ``overwrite`` says; an existing file (``folder``
    False) or a folder that already holds files (``folder`` True) unless ``overwrite``
    (``--overwrite``). Also refuses a folder that is a file (``check_output_dir``)."""
    for source in inputs:
        if source and osp.exists(source) and osp.exists(path) and osp.samefile(source, path):
            raise OutputPathError(f'{setting} {path} is an input of this run ({source}); writing '
                                  f'it would destroy the input: choose another {setting}')
    for data in data_folders:
        if data and _inside(path, data):
            raise OutputPathError(f'{setting} {path} lies in the dataset folder {data}; writing '
                                  "there could replace the dataset's own files (label maps, "
                                  f'images): choose a {setting} outside it')
    check_output_dir(path if folder else osp.dirname(osp.abspath(path)), setting)
    if overwrite:
        return
    if not folder and osp.lexists(path):
        raise OutputPathError(f'{setting} {path} already exists; pass --overwrite to replace it, '
                              f'or choose another {setting}')
    if folder and osp.isdir(path) and any(os.scandir(path)):
        raise OutputPathError(f'{setting} {path} already holds files that this run could replace; '
                              f'pass --overwrite to write into it anyway, or choose a new or '
                              f'empty {setting}')


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
