"""What changes when a BiXT model is traced or scripted instead of run eagerly.

Eager runs key caches and shortcuts on Python ``int`` sizes (the positional-encoding cache, the
no-op pad, the chunked token stream). Under ``torch.export`` with dynamic shapes
(``torch.export.Dim``) those sizes are symbolic (``SymInt``), under torch.fx they are ``Proxy``
objects: they cannot key a dict, and a branch on them would pin the graph to the example size (or
stop FX). ``concrete`` tells the two apart, so a traced graph takes the one general path (compute,
always pad, no chunks) and eager keeps its shortcuts.

TorchScript compiles only the branch of ``if torch.jit.is_scripting():`` it takes, so the eager-only
parts (the fused oneDNN helpers of ``fast_ops``, which take modules as arguments, the chunk loops,
the generator over layers, the settings object) sit in the other branch; the scripted path runs
the same modules with the standard ops.
"""
from __future__ import annotations

from typing import Any


def concrete(*sizes: Any) -> bool:
    """Whether every size is a plain Python ``int`` (eager), not a symbolic one being traced."""
    return all(isinstance(size, int) for size in sizes)
