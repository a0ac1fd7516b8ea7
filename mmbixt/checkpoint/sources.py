"""Where a BiXT checkpoint comes from, each source read by the safe reader (nothing from a file runs):

- a local path (``~`` expanded, relative to the working directory, a ``str`` or ``os.PathLike``) is
  read by ``read_checkpoint``, which also understands the released zips and refuses non-finite
  weights;
- an http(s) address is read through the checked download cache (``remote.py``: connect and read
  timeouts, one cache file per whole address, a download kept only once it reads; in a distributed
  run local rank 0 of each node downloads while the others wait at a barrier); a failed download
  (a 404, no network, a stall) names the address;
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
import re
from typing import Any
from urllib.parse import urlparse

from mmengine.fileio import get_local_path

from ..compat import remote_checkpoint_schemes
from .reader import CheckpointError, PathLike, read_checkpoint
from .remote import HTTP_SCHEMES, read_cached_url


def load_from_safe_local(filename: PathLike, map_location: Any = None) -> Any:
    return read_checkpoint(filename, map_location=map_location or 'cpu')


def load_from_safe_http(url: str, map_location: Any = None) -> Any:
    """Reads ``url`` through the checked download cache (``remote.py``); messages name the
    address."""
    return read_cached_url(url, lambda local: read_checkpoint(
        local, map_location=map_location or 'cpu', shown_as=url))


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
