"""Checkpoints at an http(s) address: downloaded with timeouts into a cache keyed by the whole
address, checked before they are kept.

- **Bounded time.** Connecting and every read wait at most ``MMBIXT_DOWNLOAD_TIMEOUT`` seconds
  (default 60): a server that never answers, or sends part of the file and stalls, ends in
  ``CheckpointError`` naming the address instead of a hang.
- **One cache file per address.** The cache file (``<torch hub dir>/checkpoints/``) is named by a
  hash of the whole address followed by the file's name, so ``v1/model.pth`` and
  ``v2/model.pth`` (or two query strings) never share a file.
- **Nothing bad is kept.** The body is written to a temporary file beside the cache file; a body
  shorter than the server's ``Content-Length``, an HTML page (a login or error page served with
  status 200) and a file the safe reader refuses (damaged zip, a CRC that does not match,
  non-finite weights) are deleted and named with the cache path; only a file that was read
  successfully is renamed into place. A cached file that no longer reads (bit rot, an older
  version's download) is deleted and downloaded again.
- In a distributed run local rank 0 of each node downloads; the others wait at a barrier and
  read the cache file.
"""
from __future__ import annotations

import hashlib
import logging
import os
import os.path as osp
import shutil
import urllib.error
import urllib.request
from typing import Any, Callable, Optional
from urllib.parse import urlparse

from mmengine.logging import print_log

from ..environment import positive_number
from .reader import CheckpointError

HTTP_SCHEMES = ('http', 'https')
TIMEOUT_VARIABLE = 'MMBIXT_DOWNLOAD_TIMEOUT'
DEFAULT_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20
HTML_STARTS = (b'<!doctype html', b'<html', b'<?xml', b'<head', b'<body')
FIX = 'Check the address and the network, or download the file yourself and give its local path'


def is_http(path: Any) -> bool:
    return isinstance(path, str) and urlparse(path).scheme in HTTP_SCHEMES


def download_timeout() -> float:
    """Seconds a connection or a read may wait (``MMBIXT_DOWNLOAD_TIMEOUT``, a positive number)."""
    return positive_number(TIMEOUT_VARIABLE) or DEFAULT_TIMEOUT_S


def cache_path(url: str, cache_dir: Optional[str] = None) -> str:
    """The cache file of ``url``: a hash of the whole address, then the file's own name."""
    name = osp.basename(urlparse(url).path)
    if not name:
        raise CheckpointError(url, 'names no file', 'Give the address of a checkpoint file')
    if cache_dir is None:
        import torch
        cache_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    key = hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]
    return osp.join(cache_dir, f'{key}-{name}')


def read_cached_url(url: str, read: Callable[[str], Any],
                    cache_dir: Optional[str] = None) -> Any:
    """``read(local file)`` of ``url``'s cache file, downloading it (local rank 0; the others wait)
    when absent or when the cached copy no longer reads. ``read`` raises ``CheckpointError`` for a
    file it refuses; such a file is never kept."""
    from mmengine.dist import barrier, get_local_rank
    download_timeout()  # a bad setting stops every rank here, before any waits at the barrier
    cached = cache_path(url, cache_dir)
    failure, result = None, None
    if get_local_rank() == 0:
        try:
            result = _read_or_fetch(url, cached, read)
        except CheckpointError as err:
            failure = err
    barrier()
    if failure is not None:
        raise failure
    if result is None:  # another rank downloaded it
        if not osp.isfile(cached):
            raise CheckpointError(url, 'was not downloaded (local rank 0 of this node failed to '
                                  'fetch it)', FIX)
        result = read(cached)
    return result


def _read_or_fetch(url: str, cached: str, read: Callable[[str], Any]) -> Any:
    if osp.isfile(cached):
        try:
            return read(cached)
        except CheckpointError as err:
            os.remove(cached)
            print_log(f'{url}: the cached copy {cached} does not read ({err}); it was deleted and '
                      'is downloaded again', logger='current', level=logging.WARNING)
    os.makedirs(osp.dirname(cached), exist_ok=True)
    # The download goes to a hidden file beside the cache file, renamed into place once it reads.
    partial = osp.join(osp.dirname(cached), f'.{osp.basename(cached)}.{os.getpid()}.tmp')
    try:
        download(url, partial, cached)
        try:
            result = read(partial)
        except CheckpointError as err:
            raise CheckpointError(url, f'was downloaded but is not a usable checkpoint ({err}); '
                                  f'the download was deleted, nothing was kept at {cached}',
                                  'Check the address: it may name a page rather than the file') \
                from None
        os.replace(partial, cached)
        return result
    finally:
        if osp.exists(partial):
            os.remove(partial)


def download(url: str, target: str, shown_cache: str) -> None:
    """Writes the body of ``url`` to ``target``; refuses a stalled or failed transfer, a body
    shorter than announced and an HTML page, naming the address."""
    timeout = download_timeout()
    try:
        request = urllib.request.Request(url, headers={'User-Agent': 'mmbixt'})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            expected = response.headers.get('Content-Length')
            kind = response.headers.get_content_type()
            with open(target, 'wb') as out:
                head = response.read(CHUNK_BYTES)
                _refuse_html(url, kind, head, shown_cache)
                out.write(head)
                shutil.copyfileobj(response, out, CHUNK_BYTES)
                out.flush()
                os.fsync(out.fileno())  # on disk before it is renamed into the cache
            received = os.path.getsize(target)
    except CheckpointError:
        raise
    except TimeoutError:
        raise CheckpointError(url, f'did not answer within {timeout:g} s (connecting, or while '
                              f'sending the file); nothing was kept at {shown_cache}',
                              f'{FIX} ({TIMEOUT_VARIABLE} sets the limit)') from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, 'reason', None)
        if isinstance(reason, TimeoutError):
            raise CheckpointError(url, f'did not answer within {timeout:g} s; nothing was kept '
                                  f'at {shown_cache}', f'{FIX} ({TIMEOUT_VARIABLE} sets the '
                                  'limit)') from None
        raise CheckpointError(url, f'could not be downloaded ({type(err).__name__}: {err})',
                              FIX) from None
    if expected is not None and expected.isdigit() and received != int(expected):
        raise CheckpointError(url, f'was cut short: {received} of {expected} bytes arrived; the '
                              f'download was deleted, nothing was kept at {shown_cache}',
                              'Run again to download it anew')


def _refuse_html(url: str, kind: str, head: bytes, shown_cache: str) -> None:
    if kind in ('text/html', 'application/xhtml+xml') or \
            head.lstrip()[:20].lower().startswith(HTML_STARTS):
        raise CheckpointError(url, f'served a web page ({kind}), not a checkpoint; nothing was '
                              f'kept at {shown_cache}', 'Check the address: use the link of '
                              'the file itself (a "download" or "raw" link)')
