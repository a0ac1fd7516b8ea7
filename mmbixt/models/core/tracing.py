"""What changes when a BiXT model is traced instead of run eagerly.

Eager runs key caches and shortcuts on Python ``int`` sizes (the positional-encoding cache, the
no-op pad, the chunked token stream). Under ``torch.export`` with dynamic shapes
(``torch.export.Dim``) those sizes are symbolic (``SymInt``): they cannot key a dict, and a branch
on them would pin the exported graph to the example size. ``concrete`` tells the two apart, so the
traced graph takes the one general path (compute, always pad, no chunks) and eager keeps its
shortcuts.
"""
from __future__ import annotations

from typing import Any


def concrete(*sizes: Any) -> bool:
    """Whether every size is a plain Python ``int`` (eager), not a symbolic one being traced."""
    return all(isinstance(size, int) for size in sizes)
