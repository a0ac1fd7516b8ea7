"""Routes mmengine's checkpoint loading (``load_checkpoint``, ``load_from``, ``--resume``,
``tools/test.py``, ``init_cfg`` of other modules) through the safe reader.

mmengine retries a refused ``torch.load(weights_only=True)`` with ``weights_only=False``, which runs
whatever a pickle asks for. After ``import mmbixt``:

- a local path (``~`` expanded, relative to the working directory, a ``str`` or ``os.PathLike``) is
  read by ``read_checkpoint``, which also understands the released zips and refuses non-finite
  weights;
- a remote one (``http://``, ``https://``, and the ``s3://`` / ``petrel://`` file backends) is fetched
  by mmengine's public file API (``mmengine.fileio.get_local_path``) and read by the same reader.

Nothing from a file runs on any of these routes. mmengine's other schemes (``open-mmlab://``,
``torchvision://``, ``mmcls://``, ``pavi://``) resolve to model-zoo downloads of their own and are left
to mmengine.
"""
from __future__ import annotations

import os
from typing import Any

from mmengine.fileio import get_local_path
from mmengine.runner.checkpoint import CheckpointLoader

from .reader import PathLike, read_checkpoint

# The prefixes mmengine registers for these sources (see mmengine.runner.checkpoint).
REMOTE_PREFIXES = ('http://', 'https://', r'(\S+\:)?s3://', r'(\S+\:)?petrel://')


def load_from_safe_local(filename: PathLike, map_location: Any = None) -> Any:
    return read_checkpoint(filename, map_location=map_location or 'cpu')


def load_from_safe_remote(filename: str, map_location: Any = None) -> Any:
    """Fetches ``filename`` to a temporary local file through mmengine's file backends and reads
    it safely; messages name the remote address."""
    with get_local_path(filename) as local:
        return read_checkpoint(local, map_location=map_location or 'cpu',
                               shown_as=os.fspath(filename))


def install_safe_local_loader() -> None:
    # '' is the catch-all prefix mmengine uses for local paths; mmengine logs a loader by its name
    # after 'load_from_' ('safe_local', 'safe_remote').
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_safe_local, force=True)
    CheckpointLoader.register_scheme(prefixes=REMOTE_PREFIXES, loader=load_from_safe_remote,
                                     force=True)
