"""Bad segmentation data is refused with the file's name (label maps at their bit depth, colour
label maps, one-pixel sides, EXIF orientation, label maps without images, empty split lists), and
tools/check_dataset.py lists every bad file of a folder through the same checks."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS
from PIL import Image

import mmbixt  # noqa: F401  (registers)
from mmbixt.datasets import SegDataError, make_synthetic_ade20k
from conftest import load_tool
from test_points_dataset import MUG, rows, write_dataset

STEM = 'synth_training_00000'
init_default_scope('mmseg')


def dataset(root: Path, split: str = 'training', color_type: str = 'color', **kwargs):
    return DATASETS.build(dict(
        type='SyntheticADE20KDataset', data_root=str(root),
        data_prefix=dict(img_path=f'images/{split}', seg_map_path=f'annotations/{split}'),
        pipeline=[dict(type='LoadImageFromFile', color_type=color_type),
                  dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='CheckSegSample'), dict(type='PackSegInputs')], **kwargs))


@pytest.fixture(scope='module')
def pristine(tmp_path_factory) -> Path:
    return make_synthetic_ade20k(tmp_path_factory.mktemp('seg') / 'data', num_train=3, num_val=1,
                                 min_size=33, max_size=41)


@pytest.fixture
def data(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / 'data'))


def label_path(data: Path, stem: str = STEM) -> Path:
    return data / 'annotations' / 'training' / f'{stem}.png'


def image_path(data: Path, stem: str = STEM) -> Path:
    return data / 'images' / 'training' / f'{stem}.jpg'


def label_of(data: Path) -> np.ndarray:
    return np.asarray(Image.open(label_path(data)))


def write_16bit_label(data: Path, label: np.ndarray) -> None:
    Image.fromarray(label.astype(np.uint16)).save(label_path(data))
    assert Image.open(label_path(data)).mode.startswith('I;16')


def test_a_16_bit_label_map_is_read_at_its_bit_depth(data):
    label = label_of(data)
    write_16bit_label(data, label)
    loaded = dataset(data)[0]['data_samples'].gt_sem_seg.data.numpy()[0]
    np.testing.assert_array_equal(loaded, np.where(label == 0, 255, label.astype(int) - 1))
    wide = label.astype(np.uint16)
    wide[0, 0] = 257  # would become class 1 after an 8-bit cast
    write_16bit_label(data, wide)
    with pytest.raises(SegDataError, match=rf'{STEM}\.png: label values \[257\] exceed the 5 '
                       r'classes \(allowed values: 0\.\.5 with 0 = other'):
        dataset(data)[0]


def test_a_colour_label_map_is_refused_by_name(data):
    Image.fromarray(np.stack([label_of(data)] * 3, axis=-1)).save(label_path(data))
    with pytest.raises(SegDataError, match=rf'{STEM}\.png: label map has 3 channels \(RGB\); a '
                       'label map holds one class id per pixel'):
        dataset(data)[0]


@pytest.mark.parametrize('size', [(1, 1), (1, 7), (9, 1)])
def test_a_one_pixel_side_is_a_clear_error(data, size):
    Image.fromarray(np.full((*size, 3), 90, np.uint8)).save(image_path(data))
    Image.fromarray(np.ones(size, np.uint8)).save(label_path(data))
    with pytest.raises(SegDataError, match=rf'{STEM}\.png: label map is {size[1]}x{size[0]} '
                       'pixels; label maps and their images need at least 2 pixels on each side'):
        dataset(data)[0]


def rotate_by_exif(data: Path, orientation: int) -> tuple[int, int]:
    """Re-saves the image (cropped to be oblong) with an EXIF orientation tag, and its label map
    cropped alike; returns the stored (H, W)."""
    image = Image.open(image_path(data))
    box = (0, 0, image.width - 4, image.height)
    image = image.crop(box)
    Image.open(label_path(data)).crop(box).save(label_path(data))
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(image_path(data), exif=exif, quality=95)
    return image.height, image.width


def test_an_exif_rotated_image_whose_label_follows_the_stored_pixels_is_explained(data):
    height, width = rotate_by_exif(data, 6)
    with pytest.raises(SegDataError, match=rf'image is {height}x{width} \(WxH\) but its label map '
                       rf'is {width}x{height}; the image carries EXIF orientation 6, which '
                       r"LoadImageFromFile applies .*color_type='color_ignore_orientation'"):
        dataset(data)[0]
    sample = dataset(data, color_type='color_ignore_orientation')[0]  # the fix the message names
    assert tuple(sample['inputs'].shape[1:]) == (height, width)


def test_label_maps_without_their_images_are_named(data):
    image_path(data, 'synth_training_00002').unlink()
    with pytest.raises(SegDataError, match=r'annotations/training/synth_training_00002\.png: label '
                       r'map without its image .*images/training/synth_training_00002\.jpg'):
        dataset(data)


def test_all_layout_problems_are_collected_on_request(data):
    image_path(data, 'synth_training_00002').unlink()
    label_path(data, 'synth_training_00001').unlink()
    with pytest.raises(SegDataError, match=r'\(and 1 more problems: tools/check_dataset\.py'):
        dataset(data)
    collected = dataset(data, collect_layout_problems=True)
    assert len(collected) == 1 and len(collected.layout_problems) == 2


def test_an_empty_split_list_is_named(data, tmp_path):
    split_list = tmp_path / 'train.txt'
    split_list.write_text('')
    with pytest.raises(SegDataError, match=r'split list .*train\.txt names no images'):
        dataset(data, ann_file=str(split_list))
    split_list.write_text(f'{STEM}\nnot_there\n')
    with pytest.raises(SegDataError, match=r'not_there\.jpg: listed in .*train\.txt but does '
                       'not exist'):
        dataset(data, ann_file=str(split_list))
    with pytest.raises(SegDataError, match=r'split list .*nowhere\.txt does not exist'):
        dataset(data, ann_file=str(tmp_path / 'nowhere.txt'))


# ------------------------------------------------------------------ tools/check_dataset.py
@pytest.fixture(scope='module')
def check_dataset():
    return load_tool('check_dataset')


def test_check_dataset_passes_a_good_ade20k_folder(check_dataset, data, capsys):
    assert check_dataset.main([str(data), '--workers', '2']) == 0
    assert '4 samples checked' in capsys.readouterr().out


def test_check_dataset_lists_every_bad_ade20k_file(check_dataset, data, capsys):
    make_synthetic_ade20k(data, num_train=8, num_val=1, min_size=33, max_size=41)  # more files
    wide = label_of(data).astype(np.uint16)
    wide[1, 1] = 300
    write_16bit_label(data, wide)                                          # 00000: 16-bit 300
    Image.open(label_path(data, 'synth_training_00001')).convert('RGB').save(
        label_path(data, 'synth_training_00001'))                          # 00001: colour
    image_path(data, 'synth_training_00002').write_bytes(b'\xff\xd8 not a jpeg')  # 00002
    image_path(data, 'synth_training_00003').unlink()                      # 00003: no image
    label_path(data, 'synth_training_00004').unlink()                      # 00004: no label
    Image.open(label_path(data, 'synth_training_00005')).transpose(
        Image.Transpose.ROTATE_90).save(label_path(data, 'synth_training_00005'))  # size
    assert check_dataset.main([str(data)]) == 1
    lines = capsys.readouterr().out.splitlines()
    errors = [line for line in lines if line.startswith('error: ')]
    expected = {'00000': 'label values [300] exceed', '00001': 'label map has 3 channels',
                '00002': 'cannot be loaded', '00003': 'label map without its image',
                '00004': 'its label map', '00005': 'but its label map is'}
    assert len(errors) == len(expected), lines
    for stem, reason in expected.items():
        assert any(f'synth_training_{stem}' in line and reason in line for line in errors), stem
    assert '; 6 problem(s), ' in lines[-1] and lines[-1].endswith(' 0 note(s)')


def test_check_dataset_lists_every_bad_shapenetpart_file(check_dataset, tmp_path, capsys):
    shapes = {(MUG, f'ok{i}'): rows([36, 37, 36]) for i in range(20)}
    shapes.update({(MUG, 'nan'): '0 nan 0 0 1 0 36\n', (MUG, 'part'): rows([36, 47]),
                   (MUG, 'short'): '0 0 0 0 1 36\n'})
    root = write_dataset(tmp_path, shapes, extra_entries=[f'shape_data/{MUG}/gone'])
    (tmp_path / 'train_test_split' / 'shuffled_val_file_list.json').write_text(json.dumps([]))
    assert check_dataset.main([root, '--workers', '2']) == 1
    out = capsys.readouterr().out
    for reason in ('nan.txt: 1 rows hold NaN', 'part.txt: part id 47', 'short.txt: rows have 6',
                   'gone.txt: shape file not found', 'shuffled_val_file_list.json: lists no shapes',
                   'shuffled_test_file_list.json: split file not found'):
        assert reason in out, reason
    assert '24 samples checked' in out and '6 problem(s)' in out
