"""What the tools print: nothing on import (issue 10.7), one ``error:`` line per failure with the
traceback on ``--debug`` and in the log (13.5); tools find the installed package without editing
``sys.path`` and share their helpers (12.7)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmbixt.operations.cli import error_summary

REPO = Path(__file__).resolve().parents[1]
DEMO = 'configs/bixt/demo_upernet_bixt_ti.py'


def python(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_import_prints_nothing():
    out = python('-c', 'import mmbixt, mmseg.models, mmseg.apis, mmcv.cnn.bricks.transformer')
    assert out.returncode == 0, out.stderr
    assert (out.stdout, out.stderr) == ('', '')


def test_only_the_two_notices_are_silenced():
    """Other warnings, from mmbixt or from the same mmcv module, and other prints still show."""
    code = '\n'.join([
        'import warnings, mmbixt',
        "warnings.warn_explicit('another mmcv notice', UserWarning, 'transformer.py', 1,",
        "                       module='mmcv.cnn.bricks.transformer')",
        "warnings.warn_explicit('ours', UserWarning, 'x.py', 1, module='mmbixt.models')",
        "print('Could not import OneDL')",
    ])
    out = python('-c', code)
    assert 'another mmcv notice' in out.stderr and 'ours' in out.stderr
    assert out.stdout == 'Could not import OneDL\n'


def test_error_summary_is_the_innermost_message_on_one_line():
    err = ValueError('class `EncoderDecoder` in a/b.py: class `BiXTFeaturePyramid` in c/d.py: '
                     'model.neck.in_stride=16 does not match\nmore detail')
    assert error_summary(err) == 'model.neck.in_stride=16 does not match'
    assert error_summary(KeyError()) == 'KeyError'


MISMATCH = ['--cfg-options', 'model.neck.in_stride=16']


def test_a_config_error_reaches_the_user_as_one_line(tmp_path: Path):
    out = python('tools/train.py', DEMO, '--work-dir', str(tmp_path), *MISMATCH)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith('error: model.neck.in_stride=16 does not match the token stride '
                               "of model.backbone.arch={'embed_dims': 64"), out.stderr
    assert len(lines) == 1 and lines[0].endswith('(--debug shows the traceback)'), out.stderr
    assert 'Traceback' not in out.stdout + out.stderr
    logs = list(tmp_path.rglob('*.log'))
    assert logs and any('Traceback' in log.read_text() for log in logs)


def test_debug_shows_the_traceback(tmp_path: Path):
    out = python('tools/train.py', DEMO, '--work-dir', str(tmp_path), *MISMATCH, '--debug')
    assert out.returncode != 0
    assert 'Traceback' in out.stderr and 'in_stride=16' in out.stderr


def test_every_runner_tool_reports_one_line(tmp_path: Path):
    out = python('tools/test.py', DEMO, str(tmp_path / 'missing.pth'))
    assert out.returncode == 1
    assert out.stderr.startswith(f'error: checkpoint {tmp_path / "missing.pth"} does not exist')
    out = python('tools/convert_checkpoint.py', str(tmp_path / 'x.zip'), str(tmp_path / 'y.pth'))
    assert out.returncode == 1 and out.stderr.startswith('error: ')
    assert 'Traceback' not in out.stderr


def test_tools_do_not_edit_sys_path_to_find_the_package():
    """The package is installed (editable, by make setup): tools import it as any user would."""
    for tool in sorted((REPO / 'tools').glob('*.py')):
        for line in tool.read_text().splitlines():
            assert not re.search(r'sys\.path\.(insert|append)\(.*(__file__|REPO)', line), \
                f'{tool.name}: {line.strip()}'


def test_a_tool_runs_from_another_folder(tmp_path: Path):
    out = python(str(REPO / 'tools' / 'convert_checkpoint.py'), '--help', cwd=tmp_path)
    assert out.returncode == 0 and 'usage' in out.stdout
    assert out.stderr == ''


def test_eval_imagenet_does_not_import_the_classify_tool():
    out = python('-c', 'import sys; sys.path.insert(0, "tools"); import eval_imagenet; '
                       'print("classify" in sys.modules)')
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == 'False', out.stderr


def test_a_conversion_killed_while_writing_keeps_the_last_good_output(tmp_path: Path,
                                                                     monkeypatch, reference_dir):
    """convert_checkpoint.py writes through the atomic writer (the runner's saves: see
    tests/test_reliability_checkpoints.py): a write that dies leaves the last file as it was."""
    import torch

    from conftest import load_tool
    convert = load_tool('convert_checkpoint').convert
    out = tmp_path / 'out' / 'backbone.pth'
    out.parent.mkdir()
    out.write_bytes(b'the last good file')
    real_save = torch.save

    def dies_midway(obj, target, *args, **kwargs):
        real_save(obj, target, *args, **kwargs)
        raise KeyboardInterrupt('killed while writing')
    monkeypatch.setattr(torch, 'save', dies_midway)
    with pytest.raises(KeyboardInterrupt):
        convert(str(reference_dir / 'linear_p16' / 'model_best.pth.tar'), str(out), overwrite=True)
    assert out.read_bytes() == b'the last good file'
    assert [p.name for p in out.parent.iterdir()] == ['backbone.pth']


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path):
    from mmbixt.operations.fileio import atomic_write
    target = tmp_path / 'a' / 'file.bin'
    with atomic_write(str(target)) as tmp:
        Path(tmp).write_bytes(b'x')
    assert target.read_bytes() == b'x'
    with pytest.raises(RuntimeError):
        with atomic_write(str(target)) as tmp:
            Path(tmp).write_bytes(b'partial')
            raise RuntimeError('killed')
    assert target.read_bytes() == b'x'
    assert sorted(p.name for p in target.parent.iterdir()) == ['file.bin']


def test_head_classes_against_the_dataset_stop_training_before_the_first_iteration(tmp_path):
    from mmbixt.datasets import make_synthetic_ade20k
    root = make_synthetic_ade20k(tmp_path / 'data', num_train=2, num_val=1)
    out = python('tools/train.py', DEMO, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                 f'train_dataloader.dataset.data_root={root}',
                 f'val_dataloader.dataset.data_root={root}',
                 'model.decode_head.num_classes=150', 'model.auxiliary_head.num_classes=150')
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and errors[0].startswith(
        'error: model.decode_head.num_classes=150 but the dataset of train_dataloader '
        '(SyntheticADE20KDataset) has 5 classes'), out.stderr
    assert 'Iter(train)' not in out.stdout
