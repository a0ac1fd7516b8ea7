"""Imports mmseg and mmcv without the notices they print for optional extras BiXT does not use.

- onedl-mmsegmentation ``print``s "Could not import OneDL" (twice: datasets and transforms) when
  its optional OneDL dataset support is not installed; a plain ``print``, so no log level hides it.
- mmcv warns that ``MultiScaleDeformableAttention`` (a compiled op) is missing whenever
  ``mmcv.cnn.bricks.transformer`` is imported (mmseg's model registry does).

Only these two exact notices are dropped; any other output of those imports, and every warning of
mmbixt, passes unchanged.
"""
from __future__ import annotations

import contextlib
import io
import sys
import warnings
from typing import Iterator

ONEDL_NOTICE = 'Could not import OneDL'
MMCV_OPS_NOTICE = r'Fail to import ``MultiScaleDeformableAttention``'
MMCV_OPS_MODULE = r'mmcv\.cnn\.bricks\.transformer'


@contextlib.contextmanager
def missing_mmcv_ops_warning_ignored() -> Iterator[None]:
    """Within the block, mmcv's notice about its missing compiled op (matched by message, category
    and module) is dropped; the warning filters are restored afterwards, so the host's are
    unchanged."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message=MMCV_OPS_NOTICE, category=UserWarning,
                                module=MMCV_OPS_MODULE)
        yield


def import_mmseg_datasets_quietly() -> None:
    """Imports ``mmseg.datasets`` with its OneDL notice removed from what it prints."""
    if 'mmseg.datasets' in sys.modules:  # already imported (and printed) by the caller
        return
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            import mmseg.datasets  # noqa: F401
    finally:  # what else it printed reaches the user, even when the import fails
        kept = [line for line in printed.getvalue().splitlines(keepends=True)
                if line.rstrip('\n') != ONEDL_NOTICE]
        sys.stdout.write(''.join(kept))
