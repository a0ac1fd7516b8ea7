"""Timing (interleaved round-robin medians) and peak memory (growth of the peak resident set)
of the measured calls."""
from __future__ import annotations

import statistics
import sys
import time
from typing import Callable


def runnable(functions: dict[str, Callable]) -> tuple[dict[str, Callable], dict[str, str]]:
    """The functions whose first (warm-up) call ran, and why each other one cannot run on this
    machine (its error's first line): one peer that cannot run never costs its group."""
    import torch
    ran, skipped = {}, {}
    with torch.no_grad():
        for name, fn in functions.items():
            try:
                fn()
                ran[name] = fn
            except Exception as exc:  # noqa: BLE001  (reported in the table)
                first = (str(exc).splitlines() or [''])[0]
                skipped[name] = f'cannot run on this CPU: {type(exc).__name__}: {first}'[:200]
                print(f'  {name}: {skipped[name]}', file=sys.stderr)
    return ran, skipped


def interleaved(functions: dict[str, Callable], rounds: int) -> dict[str, float]:
    """Median milliseconds of each function, timed round-robin after one warm-up each (the
    caller drops what cannot run first: ``runnable``)."""
    import torch
    times = {name: [] for name in functions}
    with torch.no_grad():
        for fn in functions.values():
            fn()
        for _ in range(rounds):
            for name, fn in functions.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def _status_kb(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'/proc/self/status has no {field}')


def reset_peak_rss() -> bool:
    """Resets the peak resident set of this process (Linux ``clear_refs``); False where it
    cannot, and then peaks are the growth of the process's lifetime maximum."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _glibc():
    try:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        return libc if hasattr(libc, 'mallopt') and hasattr(libc, 'malloc_trim') else None
    except OSError:  # not glibc: resident sets include freed heap, peaks are lower bounds
        return None


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def malloc_for(peaks: bool) -> None:
    """glibc's malloc keeps freed blocks resident and reuses them, so a call's peak resident set
    would miss what earlier calls left behind. For peak measurements every block of 128 KiB or
    more is mapped on its own (returned on free); for timing, up to 32 MiB come from the heap
    (where glibc's adaptive threshold ends up). Freed heap is returned either way."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024 if peaks else 32 * 1024 * 1024)
        libc.malloc_trim(0)


def measure(fn: Callable) -> tuple[float, float]:
    """``(milliseconds, peak MB)`` of one call: the peak resident set it reached over the resident
    set before it."""
    malloc_for(peaks=True)
    before = _status_kb('VmRSS')
    if not reset_peak_rss():
        before = max(before, _status_kb('VmHWM'))
    start = time.perf_counter()
    fn()
    elapsed = (time.perf_counter() - start) * 1e3
    peak = max(0, _status_kb('VmHWM') - before) / 1024
    malloc_for(peaks=False)
    return elapsed, peak


def interleaved_with_peaks(functions: dict[str, Callable], rounds: int,
                           warm_process: bool = True) -> dict[str, dict]:
    """Median ms (round-robin after one warm-up each, which measures the peak MB) of each
    function; with ``rounds=0`` the warm-up's time. ``warm_process`` first runs one function
    untimed, so the process's one-time setup (libraries' caches, thread pools) is nobody's peak."""
    import torch
    times = {name: [] for name in functions}
    with torch.no_grad():
        if warm_process:
            next(iter(functions.values()))()
        first = {name: measure(fn) for name, fn in functions.items()}
        peaks = {name: peak for name, (_, peak) in first.items()}
        for _ in range(rounds):
            for name, fn in functions.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: {'ms': statistics.median(times[name] or [first[name][0]]), 'peak_mb': peaks[name]}
            for name in functions}
