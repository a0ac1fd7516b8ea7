"""Routes mmengine's loading of local checkpoints (``load_from``, ``--resume``, ``tools/test.py``,
``init_cfg`` of other modules) through the safe reader.

mmengine retries a refused ``torch.load(weights_only=True)`` with ``weights_only=False``, which runs
whatever a pickle asks for; after ``import mmbixt`` a local file is read by ``read_checkpoint``
instead, which also understands the released zips.
"""
from __future__ import annotations

from typing import Any

from mmengine.runner.checkpoint import CheckpointLoader

from .reader import read_checkpoint


def load_local_checkpoint(filename: str, map_location: Any = None) -> Any:
    return read_checkpoint(filename, map_location=map_location or 'cpu')


def install_safe_local_loader() -> None:
    # '' is the catch-all prefix mmengine uses for local paths.
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
