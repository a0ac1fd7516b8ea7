"""mmbixt: BiXT for MMSegmentation and timm. ``import mmbixt`` (what ``custom_imports=['mmbixt']``
does) registers the models, datasets, transforms and metrics in mmseg's (and timm's) registries and
changes nothing else in the host. The tools and the runner live in :mod:`mmbixt.operations`."""
__version__ = '0.1.0'

from .errors import MMBiXTError  # noqa: E402,F401  (the root of every error of ours)
from .quiet_imports import import_mmseg_datasets_quietly, missing_mmcv_ops_warning_ignored

with missing_mmcv_ops_warning_ignored():
    import_mmseg_datasets_quietly()  # before anything else of mmbixt imports mmseg
    from . import datasets, evaluation, models  # noqa: E402,F401  (registers)
