"""Settings of our own are checked (environment variables, model.test_cfg keys, slide windows,
crops), and no tool replaces a file it was not asked to replace (issue 29)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

import mmbixt  # noqa: F401  (registers)
from mmbixt import environment
from mmbixt.operations.engine.consistency import check_crop_fits
from mmbixt.operations.fileio import OutputPathError
from mmbixt.models.segmentors.bixt_encoder_decoder import window_count

from conftest import REPO, load_tool

DEMO = REPO / 'configs' / 'bixt' / 'demo_upernet_bixt_ti.py'


# ------------------------------------------------------------------ environment variables
@pytest.mark.parametrize('name, value, hint', [
    ('MMBIXT_FUSED_ATTENTION', 'yes', 'did you mean MMBIXT_FUSED_ATTENTION=1?'),
    ('MMBIXT_FUSED_ATTENTION', 'off', 'did you mean MMBIXT_FUSED_ATTENTION=0?'),
    ('MMBIXT_MAX_IMAGE_PIXELS', '-5', 'did you mean MMBIXT_MAX_IMAGE_PIXELS=0?'),
    ('MMBIXT_DOWNLOAD_TIMEOUT', '0', 'give a positive number of seconds')])
def test_a_bad_value_of_our_variables_is_refused_naming_the_valid_one(monkeypatch, name, value,
                                                                    hint):
    monkeypatch.setenv(name, value)
    with pytest.raises(environment.EnvironmentSettingError) as info:
        environment.check_variable_names()
    assert str(info.value).startswith(f'{name}={value!r} is not valid') and hint in str(info.value)


def test_the_readers_refuse_bad_values_where_they_read_them(monkeypatch):
    """MMBIXT_MAX_IMAGE_PIXELS is read at each image; MMBIXT_FUSED_ATTENTION once, when mmbixt is
    imported (it sets the default attention kernel)."""
    import subprocess
    import sys
    from mmbixt.datasets.image_files import max_image_pixels
    monkeypatch.setenv('MMBIXT_MAX_IMAGE_PIXELS', '-5')
    with pytest.raises(ValueError, match='MMBIXT_MAX_IMAGE_PIXELS'):
        max_image_pixels()
    env = {'PATH': '/usr/bin:/bin', 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1',
           'MMBIXT_FUSED_ATTENTION': 'yes'}
    out = subprocess.run([sys.executable, '-c', 'import mmbixt'], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "mmbixt.environment.EnvironmentSettingError: MMBIXT_FUSED_ATTENTION='yes' is not valid "
        '(did you mean MMBIXT_FUSED_ATTENTION=1?): give 1 (the tiled CPU attention kernel, the '
        'default) or 0 (two fused-attention calls), or unset it')


def test_a_misspelt_variable_name_is_refused_naming_the_closest(monkeypatch):
    monkeypatch.setenv('MMBIXT_FUSED_ATENTION', '1')
    with pytest.raises(environment.EnvironmentSettingError,
                       match=r'MMBIXT_FUSED_ATENTION is not one mmbixt reads \(did you mean '
                             r'MMBIXT_FUSED_ATTENTION\?\)'):
        environment.check_variable_names()


def test_tools_refuse_a_bad_variable_in_one_line(tmp_path):
    import subprocess
    import sys
    env = {'PATH': '/usr/bin:/bin', 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1',
           'MMBIXT_MAX_IMAGE_PIXELS': '-5'}
    out = subprocess.run([sys.executable, 'tools/test.py', str(DEMO), str(tmp_path / 'x.pth')],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith(
        "error: MMBIXT_MAX_IMAGE_PIXELS='-5' is not valid (did you mean MMBIXT_MAX_IMAGE_PIXELS=0?)")


# ------------------------------------------------------------------ model.test_cfg and windows
def tiny_model_cfg(**test_cfg) -> dict:
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')  # the data preprocessor is built from mmseg's scope
    cfg = Config.fromfile(str(DEMO))
    model = cfg.model
    model.backbone.arch = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=2,
                               tokenizer='linear', patch_size=16, stride=16)
    model.backbone.out_indices = (0, 1, 1, 1)
    model.backbone.init_cfg = None
    model.test_cfg = dict(test_cfg)
    model.data_preprocessor.size = (64, 64)
    return model


def test_an_unknown_test_cfg_key_is_refused_naming_the_closest():
    with pytest.raises(ValueError, match=r'model\.test_cfg\.max_full_logit: no such setting '
                                         r'\(did you mean max_full_logits\?\)'):
        MODELS.build(tiny_model_cfg(mode='whole', max_full_logit=10))


def test_a_slide_stride_larger_than_the_window_is_refused():
    with pytest.raises(ValueError, match=r'model\.test_cfg\.stride=\(48, 48\) is larger than '
                                         r'model\.test_cfg\.crop_size=\(32, 32\)'):
        MODELS.build(tiny_model_cfg(mode='slide', crop_size=(32, 32), stride=(48, 48)))


def test_slide_windows_are_counted_before_any_runs_and_refused_above_the_limit():
    assert window_count(512, 2048, (512, 512), (341, 341)) == 6
    assert window_count(96, 96, (32, 32), (1, 1)) == 65 * 65
    model = MODELS.build(tiny_model_cfg(mode='slide', crop_size=(32, 32), stride=(1, 1))).eval()
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    metas = [dict(img_shape=(96, 96), ori_shape=(96, 96), pad_shape=(96, 96))]
    with pytest.raises(ValueError, match=r'a 96x96 image would run 4225 windows of \(32, 32\) at '
                                         r'model\.test_cfg\.stride=\(1, 1\), more than '
                                         r'model\.test_cfg\.max_windows=4096'):
        model.inference(torch.zeros(1, 3, 96, 96), metas)
    model.test_cfg['max_windows'] = 100
    with pytest.raises(ValueError, match='max_windows=100'):
        model.inference(torch.zeros(1, 3, 48, 48), metas)


def test_a_training_crop_larger_than_the_preprocessor_size_is_refused():
    crop = SimpleNamespace(crop_size=(96, 64))
    model = SimpleNamespace(data_preprocessor=SimpleNamespace(size=(64, 64)))
    dataset = SimpleNamespace(pipeline=SimpleNamespace(transforms=[object(), crop]))
    with pytest.raises(ValueError, match=r'pipeline\[1\] \(SimpleNamespace\) crop_size=\(96, 64\) '
                                         r'is larger than model\.data_preprocessor\.size='
                                         r'\(64, 64\)'):
        check_crop_fits(model, dataset)


# ------------------------------------------------------------------ outputs
@pytest.fixture(scope='module')
def test_tool():
    return load_tool('test')


def test_test_tool_never_writes_into_the_dataset(test_tool, tmp_path):
    cfg = Config.fromfile(str(DEMO))
    data = Path(cfg.test_dataloader.dataset.data_root)
    labels = data / cfg.test_dataloader.dataset.data_prefix.seg_map_path
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(b'x')
    args = test_tool.parse_args([str(DEMO), str(checkpoint), '--out', str(labels), '--overwrite'])
    with pytest.raises(OutputPathError, match=rf'--out {labels} lies in the dataset folder '):
        test_tool.build_config(args)


def test_test_tool_refuses_a_folder_with_files_unless_overwrite(test_tool, tmp_path):
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(b'x')
    out = tmp_path / 'predictions'
    out.mkdir()
    (out / 'a.png').write_bytes(b'earlier')
    args = test_tool.parse_args([str(DEMO), str(checkpoint), '--out', str(out)])
    with pytest.raises(OutputPathError, match=r'already holds files .* pass --overwrite'):
        test_tool.build_config(args)
    args = test_tool.parse_args([str(DEMO), str(checkpoint), '--out', str(out), '--overwrite'])
    assert test_tool.build_config(args).test_evaluator['output_dir'] == str(out)


def test_test_tool_follows_a_last_checkpoint_pointer_and_takes_urls(test_tool, tmp_path, capsys):
    checkpoint = tmp_path / 'iter_4.pth'
    checkpoint.write_bytes(b'x')
    (tmp_path / 'last_checkpoint').write_text(str(checkpoint))
    assert test_tool.checkpoint_to_test(str(tmp_path / 'last_checkpoint')) == str(checkpoint)
    assert f'names {checkpoint}: testing that checkpoint' in capsys.readouterr().err
    checkpoint.unlink()
    with pytest.raises(test_tool.ToolError, match=r'is the pointer file a training writes .* '
                                                  r'that file does not exist'):
        test_tool.checkpoint_to_test(str(tmp_path / 'last_checkpoint'))
    url = 'https://example.org/v1/model.pth'
    assert test_tool.checkpoint_to_test(url) == url  # read by the loader (download, cache)


def test_export_never_writes_over_its_checkpoint_or_an_existing_file(tmp_path):
    export = load_tool('export_onnx')
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(b'the weights')
    with pytest.raises(OutputPathError, match=rf'--out {checkpoint} is an input of this run'):
        export.main([str(DEMO), str(checkpoint), '--out', str(checkpoint), '--overwrite'])
    other = tmp_path / 'other.onnx'
    other.write_bytes(b'an earlier graph')
    with pytest.raises(OutputPathError, match=rf'--out {other} already exists; pass --overwrite'):
        export.main([str(DEMO), str(checkpoint), '--out', str(other)])
    assert checkpoint.read_bytes() == b'the weights' and other.read_bytes() == b'an earlier graph'


def test_no_tool_writes_its_work_dir_or_figures_into_a_dataset(tmp_path):
    import argparse
    from mmbixt.operations.cli import load_tool_config
    cfg = Config.fromfile(str(DEMO))
    images = Path(cfg.train_dataloader.dataset.data_root) / 'images'
    args = argparse.Namespace(config=str(DEMO), launcher='none', cfg_options={},
                              work_dir=str(images / 'run'))
    with pytest.raises(OutputPathError, match=rf'--work-dir {images / "run"} lies in the dataset '):
        load_tool_config(args)
    args.work_dir = str(tmp_path / 'run')
    assert load_tool_config(args).work_dir == str(tmp_path / 'run')


def test_the_fused_kernels_switch_is_on_unless_set_to_0(monkeypatch):
    name = 'MMBIXT_FUSED_KERNELS'
    monkeypatch.delenv(name, raising=False)
    assert environment.switch(name, default=True)
    monkeypatch.setenv(name, '0')
    assert not environment.switch(name, default=True)
    monkeypatch.setenv(name, 'off')
    with pytest.raises(environment.EnvironmentSettingError, match=rf"{name}='off' is not valid "
                       rf"\(did you mean {name}=0\?\)"):
        environment.switch(name, default=True)
