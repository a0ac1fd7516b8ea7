"""Reading checkpoint files safely: zips as downloaded, timm ``.pth.tar``, plain ``.pth``/``.pt``.

Everything goes through ``torch.load(weights_only=True)``: tensors, plain containers and a short list
of data-only classes (``argparse.Namespace``, which the BiXT training script stored as ``args``; the
numpy arrays and mmengine ``HistoryBuffer`` that mmengine writes into its own checkpoints). Nothing in
a file can run: a file naming any other class or function is refused unread.
"""
from __future__ import annotations

import argparse
import functools
import io
import logging
import os
import pickle
import re
import tarfile
import zipfile
import zlib
from typing import Any, Optional, Union

import torch
from mmengine.logging import print_log

from ..compat import numpy_pickle_globals
from ..errors import MMBiXTError

CHECKPOINT_SUFFIXES = ('.pth.tar', '.pth', '.pt', '.ckpt', '.tar', '.bin')
PathLike = Union[str, os.PathLike]


class CheckpointError(MMBiXTError, ValueError):
    """A checkpoint file that cannot be used; the message names the file, the problem and the fix."""

    def __init__(self, path: PathLike, problem: str, fix: str = ''):
        self.path = str(path)
        message = f'{self.path}: {problem}'
        super().__init__(f'{message}. {fix}' if fix else message)


def _is_torch_zip(names: list[str]) -> bool:
    """torch.save writes a zip whose members all sit in one folder holding ``data.pkl``."""
    tops = {name.split('/', 1)[0] for name in names}
    return len(tops) == 1 and any(name.endswith('/data.pkl') for name in names)


# A checkpoint member's declared size and compression ratio are checked before it is read: a zip
# bomb (a small archive declaring a huge member) is refused without being inflated. Checkpoints
# barely compress (float weights: a ratio near 1); 100 leaves room for sparse or zero tensors.
MAX_MEMBER_BYTES = 16 << 30
MAX_COMPRESSION_RATIO = 100


def _member_in_archive(path: PathLike, archive: zipfile.ZipFile) -> str:
    names = [n for n in archive.namelist()
             if n.endswith(CHECKPOINT_SUFFIXES) and '__MACOSX' not in n]
    if not names:
        raise CheckpointError(
            path, 'is a zip archive with no checkpoint inside (looked for '
            + ', '.join(CHECKPOINT_SUFFIXES) + f' files among {len(archive.namelist())} entries)',
            'Point at the zip as downloaded from the BiXT weights table, or at the .pth.tar inside it')
    if len(names) > 1:
        best = [n for n in names if os.path.basename(n).startswith('model_best')]
        if len(best) != 1:
            raise CheckpointError(path, f'holds several checkpoints ({", ".join(names)})',
                                  'Unpack the one you want and point at it')
        print_log(f'{path}: holds {len(names)} checkpoints ({", ".join(names)}); using '
                  f'{best[0]}', logger='current', level=logging.WARNING)
        names = best
    return names[0]


def check_declared_sizes(path: PathLike, archive: zipfile.ZipFile,
                         members: Optional[list[str]] = None) -> None:
    """Refuses, before reading, a member larger than ``MAX_MEMBER_BYTES`` or compressed more than
    ``MAX_COMPRESSION_RATIO`` times (a zip bomb); ``members`` None checks all of them."""
    for info in archive.infolist():
        if members is not None and info.filename not in members:
            continue
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > MAX_MEMBER_BYTES or (info.file_size > 1 << 20
                                                 and ratio > MAX_COMPRESSION_RATIO):
            raise CheckpointError(
                path, f'declares a member {info.filename} of {info.file_size / 2**20:.0f} MiB '
                f'stored in {info.compress_size / 2**20:.2f} MiB (compression ratio {ratio:.0f}); '
                f'no checkpoint is that large or compresses that well (limits: '
                f'{MAX_MEMBER_BYTES >> 30} GiB, ratio {MAX_COMPRESSION_RATIO}), so it was not '
                'inflated', 'The file is not a BiXT download: download it again from the '
                'weights table')


def _history_buffer_method(obj: Any, name: str) -> Any:
    """Stands in for ``getattr`` while unpickling: mmengine pickles the statistics methods of its
    ``HistoryBuffer`` as ``getattr(buffer, 'mean')``; any other use of getattr is refused, since a
    free getattr reaches every module and function."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if (isinstance(obj, HistoryBuffer) or obj is HistoryBuffer) and not name.startswith('_') \
            and callable(getattr(HistoryBuffer, name, None)):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'Unsupported global: GLOBAL getattr({type(obj).__name__}, {name!r})')


@functools.lru_cache(maxsize=1)
def safe_globals() -> list:
    """The data-only classes a checkpoint may name besides tensors and plain containers."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    numpy_dtypes = [getattr(np.dtypes, name) for name in np.dtypes.__all__]
    return [argparse.Namespace, HistoryBuffer, np.ndarray, np.dtype, *numpy_pickle_globals(),
            *numpy_dtypes, (_history_buffer_method, 'builtins.getattr')]


# torch's own messages advise re-running with ``weights_only=False``, i.e. running the file's code:
# such sentences never reach a message of ours.
_UNSAFE_ADVICE = re.compile(r'weights_only|re-running|trusted source', re.IGNORECASE)


def without_unsafe_advice(text: str) -> str:
    """``text`` without the sentences of torch's advice to unpickle (those naming
    ``weights_only``, re-running, or a trusted source)."""
    sentences = re.split(r'(?<=[.!?])\s+', text.strip())
    return ' '.join(s for s in sentences if not _UNSAFE_ADVICE.search(s)) or 'no detail'


def _torch_load(source: Any, path: PathLike, map_location: Any = 'cpu') -> Any:
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r'GLOBAL ([\w.]+(?:\([^)]*\))?)', str(err))
        if found:
            raise CheckpointError(
                path, f'asks to load {found.group(1)}, which is not plain tensor data; it was '
                'refused unread, since unpickling it could execute code',
                'Use a checkpoint that holds only tensors (for example one written by '
                'tools/convert_checkpoint.py)') from None
        raise CheckpointError(path, 'is damaged or not a PyTorch checkpoint (its pickle data '
                              'cannot be read)', 'If it was downloaded, download it again') from None
    except Exception as err:  # noqa: BLE001  whatever arbitrary bytes make torch's reader raise
        # (RuntimeError, EOFError, KeyError, IndexError, ... depending on the bytes)
        first_line = str(err).splitlines()[0] if str(err) else ''
        raise CheckpointError(
            path, f'is damaged or not a PyTorch checkpoint ({type(err).__name__}: '
            f'{without_unsafe_advice(first_line)})',
            'If it was downloaded, the download may be incomplete: download it again') from None


def read_checkpoint(path: PathLike, map_location: Any = 'cpu',
                    shown_as: Optional[str] = None) -> Any:
    """The object stored in ``path`` (``~`` expanded; a ``str`` or ``os.PathLike``): a released
    zip (the checkpoint is found inside it, whatever its folder), or a file written by
    ``torch.save``. Refuses weights with NaN or inf (see ``check_finite``) and negative
    BatchNorm variances (``check_variances``). Messages name the file
    as ``shown_as`` (default: ``path`` as given), e.g. the URL a temporary download came from."""
    shown = shown_as or str(path)
    local = os.path.expanduser(os.fspath(path))
    ckpt = _read(local, shown, map_location)
    check_finite(ckpt, shown)
    check_variances(ckpt, shown)
    return ckpt


def _read(path: str, shown: str, map_location: Any) -> Any:
    if not os.path.isfile(path):
        raise CheckpointError(shown, 'does not exist' if not os.path.exists(path) else
                              'is not a file', 'Check the path to the checkpoint')
    if os.path.getsize(path) == 0:
        raise CheckpointError(shown, 'is empty', 'Download it again')
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if _is_torch_zip(names):
                    check_declared_sizes(shown, archive)
                    check_member_crcs(shown, archive)
                else:
                    member = _member_in_archive(shown, archive)
                    check_declared_sizes(shown, archive, [member])
                    return _torch_load(io.BytesIO(archive.read(member)), f'{shown}!{member}',
                                       map_location)
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise CheckpointError(shown, f'is a damaged zip archive ({err})',
                                  'The download may be incomplete: download it again') from None
    elif _looks_like_truncated_zip(path):
        raise CheckpointError(shown, 'is a truncated zip archive (its end is missing)',
                              'The download is incomplete: download it again')
    elif tarfile.is_tarfile(path):
        # torch reads its pre-1.6 .tar layout only by unpickling (it refuses weights_only=True).
        raise CheckpointError(shown, "is a tar archive (PyTorch's legacy .tar checkpoint layout, "
                              'or not a checkpoint at all), which cannot be read without running '
                              'code from it, so it was refused unread',
                              'Use a checkpoint written by torch.save of PyTorch 1.6 or later')
    return _torch_load(path, shown, map_location)


def check_member_crcs(path: PathLike, archive: zipfile.ZipFile) -> None:
    """Refuses an archive whose members' bytes do not match their CRC-32 (bit rot, a damaged copy):
    torch's zip reader does not check them, so flipped bytes inside a tensor would load silently."""
    for info in archive.infolist():
        with archive.open(info) as member:  # zipfile checks the CRC when the member is read whole
            while member.read(1 << 24):
                pass


def _looks_like_truncated_zip(path: PathLike) -> bool:
    with open(path, 'rb') as f:
        return f.read(4) == b'PK\x03\x04'


# Where a checkpoint keeps its weights: timm and mmengine write ``state_dict`` (timm's EMA copy in
# ``state_dict_ema``), DeiT-style training scripts ``model``; anything else is a bare state dict.
WEIGHT_ENTRIES = ('state_dict', 'model')
EMA_ENTRY = 'state_dict_ema'


def _weight_dicts(ckpt: Any) -> list[tuple[str, dict]]:
    if not isinstance(ckpt, dict):
        return []
    found = [(f'{key}/', ckpt[key]) for key in (*WEIGHT_ENTRIES, EMA_ENTRY)
             if isinstance(ckpt.get(key), dict)]
    return found or [('', ckpt)]


def non_finite_tensors(ckpt: Any) -> list[str]:
    """Names of the floating-point weight tensors of ``ckpt`` holding NaN or inf (weights under
    ``state_dict``, ``state_dict_ema`` or ``model``, else the top-level ones; an optimizer's
    ``state_dict()`` is searched whole, nested containers included)."""
    bad = []
    for where, weights in _weight_dicts(ckpt):
        for name, value in _tensors(weights, where):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(name[len('state_dict/'):] if where == 'state_dict/' else name)
    return bad


def _tensors(tree: Any, prefix: str):
    """``(name, tensor)`` of every tensor in nested dicts, lists and tuples."""
    if isinstance(tree, torch.Tensor):
        yield prefix.rstrip('.'), tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _tensors(value, f'{prefix}{key}.')
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from _tensors(value, f'{prefix}{index}.')


def check_finite(ckpt: Any, path: PathLike) -> None:
    """Refuses a checkpoint whose weights hold NaN or inf, naming the tensors."""
    bad = non_finite_tensors(ckpt)
    if bad:
        names = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
        raise CheckpointError(path, f'has non-finite weights (NaN or inf) in {len(bad)} '
                              f'tensor{"s" if len(bad) > 1 else ""}: {names}',
                              'The training that wrote it diverged: use an earlier checkpoint')


VARIANCE_SUFFIX = 'running_var'


def check_variances(ckpt: Any, path: PathLike) -> None:
    """Refuses a checkpoint with a BatchNorm ``running_var`` below zero: no variance is negative,
    and the square root of one makes every output NaN."""
    for where, weights in _weight_dicts(ckpt):
        for name, value in _tensors(weights, where):
            if name.endswith(VARIANCE_SUFFIX) and value.is_floating_point() \
                    and bool((value < 0).any()):
                shown = name[len('state_dict/'):] if where == 'state_dict/' else name
                raise CheckpointError(path, f'has a negative BatchNorm variance in {shown} '
                                      f'(lowest {value.min().item():.4g}); a variance is never '
                                      'below zero, so the file is damaged',
                                      'Use another copy or an earlier checkpoint of the run')
