"""The repository folder itself, imported only when Python starts in the folder above a clone named
``mmbixt`` (``git clone`` names it so): there ``import mmbixt`` finds this folder before the
installed package. Without this file Python would make it an empty namespace package, so nothing of
mmbixt would be registered or installed (mmengine's loader would then fall back to unpickling with
``weights_only=False``); instead the package inside the clone is imported in its place, or, if it is
missing, the import stops with one line saying why. See docs/reliability.md.
"""
import importlib.util
import os.path as osp
import sys


def _import_package_inside() -> None:
    inner = osp.join(osp.dirname(osp.abspath(__file__)), 'mmbixt')
    init = osp.join(inner, '__init__.py')
    if not osp.isfile(init):
        raise ImportError(
            f'{osp.dirname(init)}: Python imported the folder {osp.dirname(inner)} as mmbixt (it '
            f'was started in the folder above it), but it holds no mmbixt package; start Python '
            'in another folder, or install mmbixt with `make setup` inside the clone')
    spec = importlib.util.spec_from_file_location(__name__, init,
                                                  submodule_search_locations=[inner])
    package = importlib.util.module_from_spec(spec)
    sys.modules[__name__] = package  # the import system returns what sys.modules holds at the end
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[__name__]
        raise


if __name__ == 'mmbixt':
    _import_package_inside()
