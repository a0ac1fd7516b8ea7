"""The one door to third-party internals: every use of a private torch, numpy or mmengine name in
mmbixt goes through here, guarded so that an upgrade degrades to the public path instead of
breaking (``tests/test_compat.py`` pins the allow-list of these names).

- ``onednn_linear``: oneDNN's fused linear (``torch.ops.mkldnn._linear_pointwise``), checked
  against ``F.linear`` once on first use; on any error or mismatch it is never used again.
- ``numpy_pickle_globals``: the numpy functions an array's pickle names, for torch's
  ``weights_only`` reader, from the module where the installed numpy keeps them (``numpy.core``
  before 2.0, ``numpy._core`` since), under both spellings a file may use.
- ``remote_checkpoint_schemes``: the remote file schemes mmengine's file backends serve, read
  from its public backend registry (``mmengine.fileio.backends.prefix_to_backends``).
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import print_log

# The private names used here, one line each (tests/test_compat.py checks nothing else is used).
PRIVATE_NAMES = {
    'torch.ops.mkldnn._linear_pointwise': 'fused matmul + bias + GELU / residual add (CPU)',
    'numpy._core.multiarray._reconstruct': 'unpickling arrays in checkpoints (numpy >= 2)',
    'numpy.core.multiarray._reconstruct': 'unpickling arrays in checkpoints (numpy < 2)',
    'numpy._core.multiarray.scalar': 'unpickling numpy scalars in checkpoints (numpy >= 2)',
    'numpy.core.multiarray.scalar': 'unpickling numpy scalars in checkpoints (numpy < 2)',
}
ONEDNN_TOLERANCE = 1e-4


@functools.lru_cache(maxsize=1)
def onednn_linear() -> Optional[Callable]:
    """oneDNN's fused linear op when it exists and agrees with ``F.linear`` (plain, GELU and
    residual add) on a small input; None, for good, on any error or mismatch."""
    try:
        if not torch.backends.mkldnn.is_available():
            return None
        op = by_overload(torch.ops.mkldnn._linear_pointwise)
        problem = _onednn_mismatch(op)
    except Exception as err:  # noqa: BLE001  whatever a torch build without the op raises
        problem = f'{type(err).__name__}: {err}'.splitlines()[0]
    if problem is None:
        return op
    print_log(f'oneDNN fused linear disabled ({problem}); inference uses F.linear',
              logger='current', level=logging.WARNING)
    return None


def by_overload(packet) -> Callable:
    """``packet(*args)`` with the overload picked by arity: the packet's own resolution builds
    the message of the overload it rejects first, a full repr of every tensor argument (that made
    a 512 px fp32 BiXT-Ti/16 forward 1.7x slower)."""
    unary, binary = packet.default, packet.binary

    def fused_linear(x, *rest):
        # unary: (x, weight, bias, attr, scalars, algorithm); binary: (x, other, weight, bias, attr)
        return binary(x, *rest) if len(rest) == 4 else unary(x, *rest)
    return fused_linear


def _onednn_mismatch(op: Callable) -> Optional[str]:
    generator = torch.Generator().manual_seed(0)
    x, residual = (torch.randn(2, 5, 16, generator=generator) for _ in range(2))
    weight, bias = torch.randn(8, 16, generator=generator), torch.randn(8, generator=generator)
    residual = residual[..., :8].contiguous()
    with torch.no_grad():
        plain = F.linear(x, weight, bias)
        results = {'linear': (op(x, weight, bias, 'none', [], 'none'), plain),
                   'linear+gelu': (op(x, weight, bias, 'gelu', [], 'none'), F.gelu(plain)),
                   'linear+add': (op(x, residual, weight, bias, 'add'), plain + residual)}
    for name, (fused, expected) in results.items():
        if fused.shape != expected.shape or not torch.allclose(fused, expected,
                                                               atol=ONEDNN_TOLERANCE):
            return f'{name} differs from F.linear'
    return None


def numpy_pickle_globals() -> list:
    """``(function, qualified name)`` pairs torch's ``safe_globals`` needs for numpy arrays and
    scalars in a pickle, whichever numpy (1.x or 2.x) wrote it."""
    # numpy 2 moved numpy.core to numpy._core (numpy.core warns); numpy 1.x has only numpy.core.
    if numpy_major() >= 2:
        reconstruct, scalar = np._core.multiarray._reconstruct, np._core.multiarray.scalar
    else:
        reconstruct, scalar = np.core.multiarray._reconstruct, np.core.multiarray.scalar
    return [(function, f'{module}.{name}')
            for function, name in ((reconstruct, '_reconstruct'), (scalar, 'scalar'))
            for module in ('numpy.core.multiarray', 'numpy._core.multiarray')]


def numpy_major() -> int:
    return int(np.__version__.split('.')[0])


def remote_checkpoint_schemes() -> tuple[str, ...]:
    """The remote schemes (``'http'``, ``'s3'``, ...) of mmengine's registered file backends."""
    from mmengine.fileio.backends import prefix_to_backends
    return tuple(sorted(prefix for prefix in prefix_to_backends if prefix))
