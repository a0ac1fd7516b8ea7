"""One root for every error of mmbixt: a caller catches ours with ``except MMBiXTError`` (and still
with the built-in base each error always had)."""
from __future__ import annotations

import pytest

import mmbixt.operations  # noqa: F401  (every module that defines an error of ours)
from mmbixt import MMBiXTError
from mmbixt.checkpoint import CheckpointError, read_checkpoint
from mmbixt.datasets.image_files import read_image
from mmbixt.operations.engine.config_file import read_config
from mmbixt.operations.fileio import check_output_dir


def every_subclass(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found.union(*(every_subclass(sub) for sub in found)) if found else found


def test_every_exception_class_of_mmbixt_derives_from_the_root():
    ours = {cls for cls in every_subclass(Exception) if cls.__module__.startswith('mmbixt.')}
    assert len(ours) >= 9
    assert {cls.__qualname__ for cls in ours if not issubclass(cls, MMBiXTError)} == set()


@pytest.mark.parametrize('failing', [
    lambda tmp: read_checkpoint(tmp / 'missing.pth'),
    lambda tmp: read_image(str(tmp / 'missing.png')),
    lambda tmp: read_config(str(tmp / 'missing.py')),
    lambda tmp: check_output_dir(str(tmp / 'conftest.py' / 'out'), '--out'),
], ids=['checkpoint', 'image', 'config', 'output dir'])
def test_refusals_are_caught_as_ours_and_as_their_builtin_base(tmp_path, failing):
    (tmp_path / 'conftest.py').write_text('')  # a file where the output dir would go
    with pytest.raises(MMBiXTError) as caught:
        failing(tmp_path)
    assert isinstance(caught.value, (ValueError, RuntimeError))


def test_a_checkpoint_error_is_still_a_value_error(tmp_path):
    with pytest.raises(ValueError):
        read_checkpoint(tmp_path / 'missing.pth')
    assert issubclass(CheckpointError, MMBiXTError)
