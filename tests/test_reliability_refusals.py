"""Silent failures turned into one-line refusals naming the file or the setting: missing
training files (FIFOs, dangling links), splits with no labelled pixel, point clouds without extent,
impossible sizes, a training of 0 iterations, config syntax errors, output folders that are
files, and an ONNX check against a PyTorch model that itself produces NaN."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmseg.registry import DATASETS, MODELS
from PIL import Image

import mmbixt  # noqa: F401  (registers)
from conftest import REPO, load_tool
from mmbixt.datasets import SegDataError, make_synthetic_ade20k
from mmbixt.datasets.shapenet_part import ShapeNetPartDataError, read_points_file
from mmbixt.operations.cli import run_cli
from test_points_dataset import MUG, rows, write_dataset

DEMO = REPO / 'configs' / 'bixt' / 'demo_upernet_bixt_ti.py'
POINT_DEMO = REPO / 'configs' / 'bixt' / 'demo_partseg_bixt.py'
STEM = 'synth_training_00001'


@pytest.fixture(scope='module')
def pristine(tmp_path_factory) -> Path:
    return make_synthetic_ade20k(tmp_path_factory.mktemp('refusals') / 'data', num_train=3,
                                 num_val=1, min_size=33, max_size=41)


@pytest.fixture
def data(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / 'data'))


def build_split(root: Path, split: str = 'training', pipeline=(), **kwargs):
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    return DATASETS.build(dict(
        type='SyntheticADE20KDataset', data_root=str(root), pipeline=list(pipeline),
        data_prefix=dict(img_path=f'images/{split}', seg_map_path=f'annotations/{split}'),
        **kwargs))


def check_dataset_errors(root: Path, capsys) -> list[str]:
    assert load_tool('check_dataset').main([str(root), '--workers', '1']) == 1
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith('error: ')]


# ------------------------------------------------------------ files that are not files
@pytest.mark.parametrize('kind', ['fifo', 'dangling link'])
def test_an_image_that_is_no_file_is_named_missing_with_its_label_map(data, capsys, kind):
    image = data / 'images' / 'training' / f'{STEM}.jpg'
    image.unlink()
    if kind == 'fifo':
        os.mkfifo(image)
        reason = 'is a FIFO (named pipe), not a file'
    else:
        image.symlink_to(data / 'gone.jpg')
        reason = f'is a symbolic link to {data / "gone.jpg"}, which does not exist'
    label = data / 'annotations' / 'training' / f'{STEM}.png'
    expected = f'{image}: {reason}; the sample is missing (with its label map {label})'
    with pytest.raises(SegDataError) as error:
        build_split(data)
    assert str(error.value) == expected
    assert check_dataset_errors(data, capsys) == [f'error: {expected}']


def test_a_label_map_that_is_a_fifo_is_named(data):
    label = data / 'annotations' / 'training' / f'{STEM}.png'
    label.unlink()
    os.mkfifo(label)
    with pytest.raises(SegDataError, match=f'its label map {label} is a FIFO'):
        build_split(data)


# ------------------------------------------------------------ nothing labelled
def test_a_split_without_a_labelled_pixel_is_refused_naming_files(data, capsys):
    maps = sorted((data / 'annotations' / 'training').glob('*.png'))
    for index, path in enumerate(maps):  # 0 = other and 255 = ignored: nothing to learn
        shape = np.asarray(Image.open(path)).shape
        Image.fromarray(np.full(shape, 255 * (index % 2), np.uint8)).save(path)
    with pytest.raises(SegDataError) as error:
        build_split(data)
    message = str(error.value)
    assert message.startswith(f'{data / "annotations" / "training"}: none of its 3 label maps '
                              'gives any pixel a class (every value is 0 (other) or 255, ignored), '
                              f'e.g. {maps[0]}, {maps[1]}, {maps[2]}; training would see loss 0')
    assert check_dataset_errors(data, capsys) == [f'error: {message}']
    one = np.asarray(Image.open(maps[1])).copy()
    one[3, 4] = 2  # a single labelled pixel makes the split usable
    Image.fromarray(one).save(maps[1])
    assert len(build_split(data)) == 3


# ------------------------------------------------------------ point clouds without extent
def test_a_point_cloud_whose_points_coincide_is_named(tmp_path, capsys):
    shapes = {(MUG, f'ok{i}'): rows([36, 37, 36]) for i in range(3)}
    shapes[(MUG, 'dot')] = '0.5 0.5 0.5 0 0 1 36\n' * 40
    root = write_dataset(tmp_path, shapes)
    path = os.path.join(root, MUG, 'dot.txt')
    with pytest.raises(ShapeNetPartDataError) as error:
        read_points_file(path, 11)
    assert str(error.value) == (f'{path}: all 40 points lie at one position (0.5, 0.5, 0.5): the '
                                'shape has no extent to learn from (and cannot be normalised); '
                                'fix or drop the file')
    assert load_tool('check_dataset').main([root, '--splits', 'train', '--workers', '1']) == 1
    assert f'error: {error.value}' in capsys.readouterr().out


# ------------------------------------------------------------ sizes
@pytest.mark.parametrize('setting, value, named', [
    ('data_preprocessor.size', (0, 64), 'model.data_preprocessor.size=(0, 64)'),
    ('test_cfg.crop_size', (64, -1), 'model.test_cfg.crop_size=(64, -1)')])
def test_a_model_size_below_one_is_refused_naming_it(setting, value, named):
    cfg = Config.fromfile(str(DEMO))
    cfg.merge_from_dict({f'model.{setting}': value})
    with pytest.raises(ValueError, match=rf'^{named.replace("(", r"[(]").replace(")", r"[)]")}: '
                       'every side must be a positive number of pixels$'):
        MODELS.build(cfg.model)


def test_a_pipeline_crop_size_below_one_is_refused_naming_it(pristine):
    pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomCrop', crop_size=(0, 0))]
    with pytest.raises(ValueError, match=r'^dataset pipeline\[1\] \(RandomCrop\) '
                       r'crop_size=\(0, 0\): every side must be a positive number of pixels$'):
        build_split(pristine, pipeline=pipeline)


def point_model(**tokenizer):
    cfg = Config.fromfile(str(POINT_DEMO))
    cfg.model.backbone.tokenizer.update(tokenizer)
    return MODELS.build(cfg.model)


def test_zero_groups_are_refused_when_the_model_is_built():
    with pytest.raises(ValueError, match=r'^model\.backbone\.tokenizer\.num_groups=0: every side '
                       'must be a positive number of groups$'):
        point_model(num_groups=0)


def test_groups_larger_than_the_cloud_are_refused_naming_the_setting():
    model = point_model(num_groups=8, group_size=40)
    with pytest.raises(ValueError, match=r'^model\.backbone\.tokenizer\.group_size=40 is larger '
                       r'than the 32 points of each cloud: lower it'):
        model.backbone(torch.rand(1, 32, model.backbone.in_channels))


# ------------------------------------------------------------ tools
def tool_error(tool: str, argv: list, capsys) -> str:
    assert run_cli(load_tool(tool).main, [str(a) for a in argv]) == 1
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_train_refuses_zero_iterations(pristine, tmp_path, capsys):
    error = tool_error('train', [DEMO, '--work-dir', tmp_path / 'work', '--cfg-options',
                                 'train_cfg.max_iters=0',
                                 f'train_dataloader.dataset.data_root={pristine}',
                                 f'val_dataloader.dataset.data_root={pristine}'], capsys)
    assert error.startswith('error: train_cfg.max_iters=0: a training needs at least 1 iter;')
    assert not list((tmp_path / 'work').glob('*.pth'))


def test_a_config_syntax_error_names_the_config_and_line(tmp_path, capsys):
    broken = tmp_path / 'broken.py'
    broken.write_text("a = 1\nmodel = dict(type='X',\n")
    child = tmp_path / 'child.py'
    child.write_text(f'_base_ = [{str(broken)!r}]\n')
    checkpoint = tmp_path / 'c.pth'
    checkpoint.write_bytes(b'')
    assert tool_error('test', [broken, checkpoint], capsys).startswith(
        f'error: config {broken}, line 2: syntax error: ')
    assert f'(inherited by {child})' in tool_error('train', [child], capsys)
    failing = tmp_path / 'failing.py'
    failing.write_text('a = 1\nb = undefined_name + 1\n')
    assert tool_error('test', [failing, checkpoint], capsys) == (
        f"error: config {failing} (or a file it inherits) fails (line 2): NameError: name "
        "'undefined_name' is not defined (--debug shows the traceback)")
    orphan = tmp_path / 'orphan.py'
    orphan.write_text(f"_base_ = [{str(tmp_path / 'gone.py')!r}]\n")
    assert tool_error('train', [orphan], capsys).startswith(
        f"error: config {orphan}: {tmp_path / 'gone.py'}, a file it inherits, does not exist")
    assert tool_error('train', [tmp_path / 'nothere.py'], capsys).startswith(
        f"error: config {tmp_path / 'nothere.py'} does not exist")


def test_an_output_folder_that_is_a_file_says_so(tmp_path, capsys):
    occupied = tmp_path / 'occupied'
    occupied.write_text('a file')
    error = tool_error('train', [DEMO, '--work-dir', occupied], capsys)
    assert error.startswith(f'error: --work-dir {occupied}: {occupied} is a file, not a folder; '
                            'choose another --work-dir')
    image = tmp_path / 'x.png'
    Image.new('RGB', (8, 8)).save(image)
    error = tool_error('infer', [DEMO, image, image, '--out-dir', occupied / 'figures'], capsys)
    assert error.startswith(f'error: --out-dir {occupied / "figures"}: {occupied} is a file, not a '
                            f'folder ({occupied / "figures"} would lie inside it)')


def test_export_verify_blames_a_model_that_itself_outputs_nan(tmp_path, capsys):
    from mmbixt.operations.deploy.onnx import load_segmentor
    torch.manual_seed(0)
    model = load_segmentor(DEMO).model
    with torch.no_grad():
        model.decode_head.conv_seg.weight.fill_(3e38)  # finite weights whose outputs overflow
    checkpoint = tmp_path / 'overflowing.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    status = load_tool('export_onnx').main([str(DEMO), str(checkpoint), '--out',
                                            str(tmp_path / 'm.onnx'), '--shape', '64', '48',
                                            '--verify'])
    assert status == 2
    # The refusal is the tool's last line (a logger of an earlier test in this process may have
    # written to stderr before it).
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f'error: the PyTorch model of {DEMO} itself produces NaN or infinite '
                            'outputs (on a ')
    assert 'mismatch' not in error and 'FAIL' not in error


def test_train_refuses_groups_larger_than_the_clouds_before_the_first_iteration(tmp_path, capsys):
    from mmbixt.datasets.synthetic_shapes import make_synthetic_shapenetpart
    root = make_synthetic_shapenetpart(str(tmp_path / 'shapes'), {'train': 1, 'val': 1, 'test': 1},
                                       points_per_shape=300)
    error = tool_error('train', [POINT_DEMO, '--work-dir', tmp_path / 'work', '--cfg-options',
                                 f'train_dataloader.dataset.data_root={root}',
                                 f'val_dataloader.dataset.data_root={root}',
                                 'model.backbone.tokenizer.group_size=257'], capsys)
    assert error.startswith('error: model.backbone.tokenizer.group_size=257 is larger than the 256 '
                            'points of each cloud')
    assert not list((tmp_path / 'work').glob('*.pth'))
