"""Routes mmengine's checkpoint loading (``load_checkpoint``, ``load_from``, ``--resume``,
``tools/test.py``, ``init_cfg`` of other modules) through the safe reader.

mmengine retries a refused ``torch.load(weights_only=True)`` with ``weights_only=False``, which runs
whatever a pickle asks for. After ``import mmbixt``:

- a local path (``~`` expanded, relative to the working directory, a ``str`` or ``os.PathLike``) is
  read by ``read_checkpoint``, which also understands the released zips and refuses non-finite
  weights;
- an http(s) address is downloaded with mmengine's semantics (``load_from_http``): in a distributed
  run, local rank 0 of each node downloads it once into the cache (``<torch hub dir>/checkpoints``,
  ``torch.hub.download_url_to_file``: written whole, then renamed) while the others wait at a
  barrier; a failed download (a 404, no network) names the address;
- an object-store address (``s3://``, ``petrel://`` and whatever else mmengine's file backends
  serve) is fetched by mmengine's public file API (``mmengine.fileio.get_local_path``);
- both are then read by the same safe reader.

Nothing from a file runs on any of these routes. mmengine's other schemes (``open-mmlab://``,
``torchvision://``, ``mmcls://``, ``pavi://``) resolve to model-zoo downloads of their own and are left
to mmengine.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Any
from urllib.parse import urlparse

import torch
from mmengine.dist import barrier, get_local_rank
from mmengine.fileio import get_local_path
from mmengine.runner.checkpoint import CheckpointLoader

from ..compat import remote_checkpoint_schemes
from .reader import CheckpointError, PathLike, read_checkpoint

HTTP_SCHEMES = ('http', 'https')


def load_from_safe_local(filename: PathLike, map_location: Any = None) -> Any:
    return read_checkpoint(filename, map_location=map_location or 'cpu')


def load_from_safe_http(url: str, map_location: Any = None) -> Any:
    """Downloads ``url`` into the checkpoint cache (local rank 0 of each node; the others wait)
    and reads it safely; messages name the address."""
    cached = cached_download(url)
    return read_checkpoint(cached, map_location=map_location or 'cpu', shown_as=url)


def cached_download(url: str) -> str:
    """The cache file of ``url``, downloaded by local rank 0 when absent. Every rank reaches the
    barrier, even when the download fails, so no rank waits forever."""
    name = osp.basename(urlparse(url).path)
    if not name:
        raise CheckpointError(url, 'names no file', 'Give the address of a checkpoint file')
    cached = osp.join(torch.hub.get_dir(), 'checkpoints', name)
    failure = None
    if get_local_rank() == 0 and not osp.isfile(cached):
        os.makedirs(osp.dirname(cached), exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, cached, progress=False)
        except Exception as err:  # noqa: BLE001  urllib's errors: HTTPError, URLError, OSError
            failure = f'could not be downloaded ({type(err).__name__}: {err})'
    barrier()
    if failure is None and not osp.isfile(cached):
        failure = 'was not downloaded (local rank 0 of this node failed to fetch it)'
    if failure:
        raise CheckpointError(url, failure, 'Check the address and the network, or download '
                              'the file yourself and give its local path')
    return cached


def load_from_safe_remote(filename: str, map_location: Any = None) -> Any:
    """Fetches ``filename`` to a temporary local file through mmengine's file backends and reads
    it safely; messages name the remote address."""
    with get_local_path(filename) as local:
        return read_checkpoint(local, map_location=map_location or 'cpu',
                               shown_as=os.fspath(filename))


def install_safe_local_loader() -> None:
    # '' is the catch-all prefix mmengine uses for local paths; mmengine logs a loader by its name
    # after 'load_from_' ('safe_local', 'safe_http', 'safe_remote'). An object store's scheme may
    # carry a cluster name ('cluster:s3://'), as mmengine's own patterns allow.
    stores = [rf'(\S+\:)?{scheme}://' for scheme in remote_checkpoint_schemes()
              if scheme not in HTTP_SCHEMES]
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_safe_local, force=True)
    CheckpointLoader.register_scheme(prefixes=[f'{s}://' for s in HTTP_SCHEMES],
                                     loader=load_from_safe_http, force=True)
    CheckpointLoader.register_scheme(prefixes=stores, loader=load_from_safe_remote, force=True)
