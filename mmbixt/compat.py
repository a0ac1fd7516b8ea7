"""The one door to third-party internals: every use of a private torch, numpy or mmengine name in
mmbixt goes through here, guarded so that an upgrade degrades to the public path instead of
breaking (``tests/test_compat.py`` pins the allow-list of these names).

- ``cpu_capability``: what this CPU runs, as ATen and oneDNN report it and as a tiny bf16 linear
  actually runs (never ``/proc/cpuinfo``): the simulated machines of the tests
  (``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``) are seen as the real ones would be.
- ``self_tested``: a fast path checked once against the plain op on first use; on any error or
  mismatch it is off for good, with one log line (``give_up`` does the same for a failure in use).
- ``onednn_linear``: oneDNN's fused linear (``torch.ops.mkldnn._linear_pointwise``), self-tested
  per dtype (fp32; bf16 only where the CPU has native bf16).
- ``numpy_pickle_globals``: the numpy functions an array's pickle names, for torch's
  ``weights_only`` reader, from the module where the installed numpy keeps them (``numpy.core``
  before 2.0, ``numpy._core`` since), under both spellings a file may use.
- ``remote_checkpoint_schemes``: the remote file schemes mmengine's file backends serve, read
  from its public backend registry (``mmengine.fileio.backends.prefix_to_backends``).
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import print_log

# The private names used here, one line each (tests/test_compat.py checks nothing else is used).
PRIVATE_NAMES = {
    'torch.ops.mkldnn._linear_pointwise': 'fused matmul + bias + GELU / residual add (CPU)',
    'torch.ops.mkldnn._is_mkldnn_bf16_supported': "oneDNN's own check for native bf16 (honours "
                                                  'ONEDNN_MAX_CPU_ISA)',
    'torch.cpu._is_amx_tile_supported': 'AMX tiles on this CPU (oneDNN uses them for bf16)',
    'numpy._core.multiarray._reconstruct': 'unpickling arrays in checkpoints (numpy >= 2)',
    'numpy.core.multiarray._reconstruct': 'unpickling arrays in checkpoints (numpy < 2)',
    'numpy._core.multiarray.scalar': 'unpickling numpy scalars in checkpoints (numpy >= 2)',
    'numpy.core.multiarray.scalar': 'unpickling numpy scalars in checkpoints (numpy < 2)',
}
ONEDNN_TOLERANCE = 1e-4   # fp32: fused against F.linear (absolute, outputs of order 1-10)
BF16_TOLERANCE = 2e-2     # bf16: relative to the largest output (a bf16 rounding is 2^-8)


# ----------------------------------------------------------------------------- CPU capability
@dataclass(frozen=True)
class CpuCapability:
    """What this CPU runs, as the libraries report it (cached by ``cpu_capability()``).

    Args:
        aten: ATen's kernel level, ``torch.backends.cpu.get_cpu_capability()`` (``'AVX512'``,
            ``'AVX2'``, ``'DEFAULT'``, ``'SVE256'``, ...; ``ATEN_CPU_CAPABILITY`` caps it).
        onednn: whether this torch has oneDNN and it is enabled.
        bf16: native bf16 matmuls: oneDNN's own check (``ONEDNN_MAX_CPU_ISA`` caps it) and a tiny
            bf16 linear actually run and agreeing with fp32. Without it bf16 is emulated and much
            slower than fp32.
        amx: bf16 on AMX tiles (native bf16, AMX on the CPU and not capped away for oneDNN).
    """
    aten: str
    onednn: bool
    bf16: bool
    amx: bool

    def label(self) -> str:
        """Short name for tables and log lines: ``'AVX512 + bf16'``, ``'AVX2'``, ``'DEFAULT'``."""
        parts = [self.aten]
        if self.bf16:
            parts.append('AMX bf16' if self.amx else 'bf16')
        if not self.onednn:
            parts.append('no oneDNN')
        return ' + '.join(parts)


@functools.lru_cache(maxsize=1)
def cpu_capability() -> CpuCapability:
    """This CPU's capability, from ATen and oneDNN (checked once per process)."""
    onednn = torch.backends.mkldnn.is_available() and bool(torch.backends.mkldnn.enabled)
    bf16 = onednn and _onednn_reports_bf16() and _bf16_linear_runs()
    return CpuCapability(aten=torch.backends.cpu.get_cpu_capability(), onednn=onednn, bf16=bf16,
                         amx=bf16 and _amx_usable())


def _onednn_reports_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001  a torch without the check: no native bf16 claimed
        return False


def _bf16_linear_runs() -> bool:
    """A tiny bf16 ``F.linear`` (what bf16 autocast runs) works and agrees with fp32."""
    try:
        x, weight, bias = _linear_operands(torch.bfloat16)
        with torch.no_grad():
            return relative_error(F.linear(x, weight, bias),
                                   F.linear(x.float(), weight.float(), bias.float())) < BF16_TOLERANCE
    except Exception:  # noqa: BLE001  whatever a broken bf16 path raises: not native here
        return False


def _amx_usable() -> bool:
    # ONEDNN_MAX_CPU_ISA (oneDNN's documented cap) names AMX levels '..._AMX...' and 'ALL'.
    cap = os.environ.get('ONEDNN_MAX_CPU_ISA', os.environ.get('DNNL_MAX_CPU_ISA', 'ALL')).upper()
    try:
        return bool(torch.cpu._is_amx_tile_supported()) and (cap == 'ALL' or 'AMX' in cap)
    except Exception:  # noqa: BLE001  a torch without the check
        return False


# ----------------------------------------------------------------------------- self-tested paths
_VERDICTS: dict[str, Any] = {}


def self_tested(name: str, build: Callable[[], Any], check: Callable[[Any], Optional[str]],
                fallback: str) -> Any:
    """``build()``'s fast path if ``check`` on it returns None (no problem), decided once per
    ``name``; otherwise None for good, with one warning naming the problem and ``fallback`` (what
    runs instead). ``build()`` returning None means "not offered here": no warning."""
    if name in _VERDICTS:
        return _VERDICTS[name]
    try:
        path = build()
        problem = None if path is None else check(path)
    except Exception as err:  # noqa: BLE001  a private op, a compiler, a primitive: any error
        path, problem = None, one_line(err)
    if problem is not None:
        path = None
        print_log(f'{name} disabled ({problem}); {fallback}', logger='current',
                  level=logging.WARNING)
    _VERDICTS[name] = path
    return path


def give_up(name: str, err: BaseException, fallback: str) -> None:
    """A self-tested path that failed in use: off for good, with one warning."""
    if _VERDICTS.get(name) is not None:
        print_log(f'{name} disabled after an error in use ({one_line(err)}); {fallback}',
                  logger='current', level=logging.WARNING)
    _VERDICTS[name] = None


def forget_self_tests() -> None:
    """Forgets every verdict (tests: the next use checks again)."""
    _VERDICTS.clear()


def one_line(err: BaseException) -> str:
    return f'{type(err).__name__}: {(str(err).splitlines() or [""])[0][:200]}'


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest difference relative to the largest expected value (both taken in fp32)."""
    expected = expected.float()
    return ((actual.float() - expected).abs().max() / expected.abs().max().clamp(min=1e-12)).item()


# ----------------------------------------------------------------------------- oneDNN linear
def onednn_linear(dtype: torch.dtype = torch.float32) -> Optional[Callable]:
    """oneDNN's fused linear for ``dtype`` inputs when it exists and agrees with ``F.linear``
    (plain, GELU and residual add) on a small input of that dtype; None, for good, on any error or
    mismatch, and for bf16 on a CPU without native bf16 (where oneDNN has no kernel for it)."""
    name = ONEDNN_LINEAR_NAMES.get(dtype)
    if name is None:
        return None
    if name in _VERDICTS:  # every fused linear call asks: the verdict without further work
        return _VERDICTS[name]
    return self_tested(name, functools.partial(_onednn_op, dtype),
                       functools.partial(_onednn_mismatch, dtype=dtype), 'inference uses F.linear')


ONEDNN_LINEAR_NAMES = {torch.float32: 'oneDNN fused linear (fp32)',
                       torch.bfloat16: 'oneDNN fused linear (bf16)'}


def _onednn_op(dtype: torch.dtype) -> Optional[Callable]:
    capability = cpu_capability()
    if not capability.onednn or (dtype == torch.bfloat16 and not capability.bf16):
        return None
    return by_overload(torch.ops.mkldnn._linear_pointwise)


def by_overload(packet) -> Callable:
    """``packet(*args)`` with the overload picked by arity: the packet's own resolution builds
    the message of the overload it rejects first, a full repr of every tensor argument (that made
    a 512 px fp32 BiXT-Ti/16 forward 1.7x slower)."""
    unary, binary = packet.default, packet.binary

    def fused_linear(x, *rest):
        # unary: (x, weight, bias, attr, scalars, algorithm); binary: (x, other, weight, bias, attr)
        return binary(x, *rest) if len(rest) == 4 else unary(x, *rest)
    return fused_linear


def _linear_operands(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 16, generator=generator)
    weight, bias = torch.randn(8, 16, generator=generator), torch.randn(8, generator=generator)
    return tuple(t.to(dtype) for t in (x, weight, bias))


def _onednn_mismatch(op: Callable, dtype: torch.dtype = torch.float32) -> Optional[str]:
    x, weight, bias = _linear_operands(dtype)
    residual = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():  # the reference in fp32 from the same (rounded) inputs
        plain = F.linear(x.float(), weight.float(), bias.float())
        results = {'linear': (op(x, weight, bias, 'none', [], 'none'), plain),
                   'linear+gelu': (op(x, weight, bias, 'gelu', [], 'none'), F.gelu(plain)),
                   'linear+add': (op(x, residual, weight, bias, 'add'), plain + residual.float())}
    for name, (fused, expected) in results.items():
        if fused.shape != expected.shape or fused.dtype != dtype:
            return f'{name} gives {fused.dtype} {tuple(fused.shape)}'
        if dtype == torch.float32 and not torch.allclose(fused, expected, atol=ONEDNN_TOLERANCE):
            return f'{name} differs from F.linear'
        if dtype != torch.float32 and relative_error(fused, expected) > BF16_TOLERANCE:
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
