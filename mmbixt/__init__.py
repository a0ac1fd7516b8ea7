"""mmbixt: BiXT for MMSegmentation. ``import mmbixt`` registers every module in mmseg's registries."""
__version__ = '0.1.0'

from .quiet_imports import ignore_missing_mmcv_ops_warning, import_mmseg_datasets_quietly

ignore_missing_mmcv_ops_warning()
import_mmseg_datasets_quietly()  # before anything else of mmbixt imports mmseg

from . import datasets, engine, evaluation, models  # noqa: E402,F401  (registers)
from .checkpoint import install_safe_local_loader  # noqa: E402

install_safe_local_loader()
