"""Where a BiXT checkpoint comes from, each source read by the safe reader (nothing from a file runs):

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

``read_from`` serves every route of ours that reads a file for a BiXT model (``init_cfg``
``Pretrained``, ``BiXTWeights.from_file``, the Python API) without touching mmengine's loader
table. Routing mmengine's own loading (``load_from``, ``--resume``, other models' ``init_cfg``)
through these loaders is an explicit choice: ``mmbixt.operations.safe_loading``.
"""
from __future__ import annotations

import os
import os.path as osp
import re
from typing import Any
from urllib.parse import urlparse

import torch
from mmengine.dist import barrier, get_local_rank
from mmengine.fileio import get_local_path

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


def store_patterns() -> list[str]:
    """mmengine's loader prefixes of the object stores its file backends serve; a scheme may carry
    a cluster name ('cluster:s3://'), as mmengine's own patterns allow."""
    return [rf'(\S+\:)?{scheme}://' for scheme in remote_checkpoint_schemes()
            if scheme not in HTTP_SCHEMES]


def read_from(source: PathLike, map_location: Any = 'cpu') -> Any:
    """A checkpoint from a local path, an http(s) address or an object store, read safely; any
    other scheme (mmengine's model-zoo names such as ``open-mmlab://``) is refused."""
    shown = os.fspath(source)
    if not isinstance(shown, str) or '://' not in shown:
        return load_from_safe_local(source, map_location)
    if urlparse(shown).scheme in HTTP_SCHEMES:
        return load_from_safe_http(shown, map_location)
    if any(re.match(pattern, shown) for pattern in store_patterns()):
        return load_from_safe_remote(shown, map_location)
    raise CheckpointError(shown, 'is not a local path, an http(s) address or an object-store '
                          'address', 'Download the file and give its local path')
