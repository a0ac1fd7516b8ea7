"""What changes when a BiXT model is traced or scripted instead of run eagerly.

Eager runs key caches and shortcuts on Python ``int`` sizes (the positional-encoding cache, the
no-op pad, the chunked token stream). Under ``torch.export`` with dynamic shapes
(``torch.export.Dim``) those sizes are symbolic (``SymInt``), under torch.fx they are ``Proxy``
objects: they cannot key a dict, and a branch on them would pin the graph to the example size (or
stop FX). Under ``torch.compile``, ``torch.jit.trace`` and the ONNX export they may be plain ints,
but whatever eager-only path they pick (a cached constant, a skipped pad, a chunk loop, a fused
kernel) would be recorded. ``traced`` is the one predicate for all of these, so a captured graph
takes the one general path (compute, always pad, no chunks, the standard ops) and eager keeps its
shortcuts.

TorchScript compiles only the branch of ``if torch.jit.is_scripting():`` it takes, so the eager-only
parts (the fused oneDNN helpers of ``fast_ops``, which take modules as arguments, the chunk loops,
the generator over layers, the settings object) sit in the other branch; the scripted path runs
the same modules with the standard ops.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def traced(*values: Any) -> bool:
    """Whether this forward is being captured as a graph instead of run eagerly: under
    ``torch.compile`` or ``torch.export`` (dynamo), ``torch.jit.trace`` or the ONNX export, or when
    one of ``values`` (sizes, tensors) is symbolic (a ``SymInt``, an FX ``Proxy``)."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export()
            or not all(isinstance(value, (int, Tensor)) for value in values))
