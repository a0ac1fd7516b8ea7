"""Routes mmengine's checkpoint loading (``load_checkpoint``, ``load_from``, ``--resume``,
``tools/test.py``, the ``init_cfg`` of every other model) through mmbixt's safe reader.

mmengine retries a refused ``torch.load(weights_only=True)`` with ``weights_only=False``, which runs
whatever a pickle asks for. ``install_safe_loading()`` registers the loaders of
:mod:`mmbixt.checkpoint.sources` in mmengine's public loader table for every local path, http(s)
address and object store, so every model of the process loads safely. It changes how the host
loads every checkpoint, so it is never a side effect of ``import mmbixt``: our tools call it, and a
config opts in by naming this module (or ``mmbixt.operations``) in ``custom_imports``. BiXT models
read through the safe reader either way.

mmengine's other schemes (``open-mmlab://``, ``torchvision://``, ``mmcls://``, ``pavi://``) resolve
to model-zoo downloads of their own and are left to mmengine.
"""
from __future__ import annotations

from mmengine.runner.checkpoint import CheckpointLoader

from ..checkpoint.sources import (HTTP_SCHEMES, load_from_safe_http, load_from_safe_local,
                                  load_from_safe_remote, store_patterns)


def install_safe_loading() -> None:
    """Registers the safe loaders in mmengine's ``CheckpointLoader`` (idempotent). mmengine logs
    a loader by its name after ``load_from_`` ('safe_local', 'safe_http', 'safe_remote')."""
    # '' is the catch-all prefix mmengine uses for local paths.
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_safe_local, force=True)
    CheckpointLoader.register_scheme(prefixes=[f'{s}://' for s in HTTP_SCHEMES],
                                     loader=load_from_safe_http, force=True)
    CheckpointLoader.register_scheme(prefixes=store_patterns(), loader=load_from_safe_remote,
                                     force=True)


