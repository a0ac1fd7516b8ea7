"""The operations layer: what our tools run on top of the models (the runner and its hooks, the
work dir, layer decay, data checks, ONNX export, figures, benchmarks, the CLI helpers).

Importing it (our tools do; a config opts in with ``custom_imports=dict(imports=['mmbixt',
'mmbixt.operations'])``) registers the runner, hooks and optimizer constructor in mmengine's and
mmseg's registries and routes mmengine's checkpoint loading through the safe reader for every model
of the process (``safe_loading.install_safe_loading``). The model layer (``mmbixt``) never imports
this package.
"""
from .. import datasets, evaluation, models  # noqa: F401  (the model layer, registered first)
from . import engine  # noqa: F401  (registers the runner, hooks, layer decay)
from .safe_loading import install_safe_loading

install_safe_loading()

__all__ = ['install_safe_loading']
