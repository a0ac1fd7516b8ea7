"""tools/check_dataset.py on a config of your own data (mmseg's BaseSegDataset, the issue's layout):
--cfg-options, the class shares and their warnings, and bad files named one by one without ending
the check (JPEG bytes under .png, a truncated label map, a 900-megapixel image, an EXIF turn)."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import load_tool
from test_training_data_checks import CPU_TEMPLATE, write_data


@pytest.fixture(scope='module')
def check_dataset():
    return load_tool('check_dataset')


def config_of(root: Path, tmp_path: Path, **settings) -> str:
    """A copy of the CPU template set up for ``root`` as a user would edit its top."""
    lines = {'data_root': repr(str(root)), 'img_suffix, seg_map_suffix': "'.jpg', '_mask.png'",
             'classes': "('background', 'circle', 'square', 'triangle')",
             'palette': '[[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]]',
             'train_prefix': "dict(img_path='images/train', seg_map_path='mask/train')",
             'val_prefix': "dict(img_path='images/val', seg_map_path='mask/val')",
             'dataset_type': "'BaseSegDataset'"}  # mmseg's own class
    lines.update(settings)
    text = CPU_TEMPLATE.read_text().replace("'./upernet_bixt_ti_ade20k.py'",
                                            repr(str(CPU_TEMPLATE.parent / 'upernet_bixt_ti_ade20k.py')))
    out = []
    for line in text.splitlines():
        key = line.split(' = ')[0]
        out.append(f'{key} = {lines[key]}' if key in lines and ' = ' in line else line)
    path = tmp_path / 'my_data.py'
    path.write_text('\n'.join(out) + '\n')
    return str(path)


def run(check_dataset, capsys, *argv) -> tuple[int, list[str]]:
    status = check_dataset.main([*argv, '--workers', '1'])
    return status, capsys.readouterr().out.splitlines()


def test_class_shares_and_the_reduce_zero_label_warning(check_dataset, tmp_path, capsys):
    root = write_data(tmp_path / 'data', classes=3)  # 'triangle' (3) never occurs
    config = config_of(root, tmp_path)
    status, lines = run(check_dataset, capsys, config, '--splits', 'train')
    assert status == 0
    assert lines[0] == (f'labels: train ({root}/mask/train): 4 label maps; class shares of '
                        'the labelled pixels: background 49.2%, circle 25.1%, square 25.7%, '
                        'triangle 0.0%; ignored: value 255 3.1% of all pixels')
    assert lines[1] == (f"warning: train ({root}/mask/train): class 'triangle' (value 3) never "
                        'occurs in its 4 label maps: check the classes, their order and '
                        'reduce_zero_label (the validation table marks such classes "absent")')
    # --cfg-options reaches the datasets: 0 (a third of the pixels) is now ignored
    status, lines = run(check_dataset, capsys, config, '--splits', 'train', '--cfg-options',
                        'train_dataloader.dataset.reduce_zero_label=True')
    assert any('reduce_zero_label=True ignores value 0, the most frequent value' in line
               for line in lines), lines
    assert lines[-1].endswith('0 problem(s), 2 warning(s), 0 note(s)')  # and 2 classes absent


def png_header_of(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels (and holds one row of them)."""
    buffer = io.BytesIO()
    Image.new('RGB', (4, 4)).save(buffer, format='PNG')
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack('>II', width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack('>I', zlib.crc32(b'IHDR' + ihdr))
    return bytes(data)


def test_bad_files_are_named_one_by_one(check_dataset, tmp_path, capsys):
    root = write_data(tmp_path / 'data', num=6)
    masks, images = root / 'mask' / 'train', root / 'images' / 'train'
    Image.open(masks / '00_mask.png').save(masks / '00_mask.png', format='JPEG')  # lossy bytes
    data = (masks / '01_mask.png').read_bytes()
    (masks / '01_mask.png').write_bytes(data[:len(data) // 2])                    # truncated
    (images / '02.jpg').write_bytes(png_header_of(30000, 30000))                   # 900 MP
    turned = Image.open(images / '03.jpg')
    exif = turned.getexif()
    exif[0x0112] = 3  # turned by 180 degrees: the size stays
    turned.save(images / '03.jpg', exif=exif)
    status, lines = run(check_dataset, capsys, config_of(root, tmp_path), '--splits', 'train')
    assert status == 1
    errors = [line for line in lines if line.startswith('error: ')]
    assert errors[0].startswith(f'error: {masks}/00_mask.png: label map holds JPEG data (a lossy '
                                'format')
    assert errors[1].startswith(f'error: {masks}/01_mask.png: label map cannot be decoded')
    assert errors[2].startswith(f'error: {images}/02.jpg: image is 30000x30000 (900 megapixels), '
                                'above the limit')
    assert any(line.startswith(f'note: {images}/03.jpg: EXIF orientation 3') for line in lines)
    assert len(errors) == 3 and '6 samples checked' in lines[-1]


def test_duplicate_split_list_entries_are_refused(check_dataset, tmp_path, capsys):
    root = write_data(tmp_path / 'data')
    (root / 'train.txt').write_text('00\n01\n00\n')
    config = config_of(root, tmp_path)
    status, lines = run(check_dataset, capsys, config, '--splits', 'train', '--cfg-options',
                        f'train_dataloader.dataset.ann_file={root}/train.txt')
    assert status == 1
    assert lines[0] == (f"error: split list {root}/train.txt: '00' is listed 2 times (lines 1, 3); "
                        'each sample once, or it weighs double in training and evaluation: '
                        'remove the repeated lines')


@pytest.fixture(scope='module')
def convert_masks():
    return load_tool('convert_masks')


def test_convert_masks_turns_palette_colours_into_class_ids(convert_masks, tmp_path, capsys):
    root = write_data(tmp_path / 'data', num=2)
    palette = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]], dtype=np.uint8)  # config_of
    masks = root / 'mask' / 'train'
    ids = {}
    for path in sorted(masks.glob('*_mask.png')):
        ids[path.name] = np.asarray(Image.open(path))
        colours = np.where(ids[path.name][..., None] == 255, np.uint8(250),
                           palette[np.minimum(ids[path.name], 3)])
        Image.fromarray(colours.astype(np.uint8)).save(path)             # an RGB colour mask
    config = config_of(root, tmp_path)
    with pytest.raises(Exception, match=r'choose where the class ids go'):
        convert_masks.main([config, '--splits', 'train'])
    out = tmp_path / 'ids'
    before = {p.name: p.read_bytes() for p in masks.iterdir()}
    assert convert_masks.main([config, '--splits', 'train', '--out-dir', str(out),
                               '--ignore-colour', '250,250,250']) == 0
    assert {p.name: p.read_bytes() for p in masks.iterdir()} == before  # inputs untouched
    for name, expected in ids.items():
        np.testing.assert_array_equal(np.asarray(Image.open(out / 'mask' / 'train' / name)),
                                      expected)
    assert 'train: ' in capsys.readouterr().out
    rgb = np.asarray(Image.open(masks / '01_mask.png')).copy()
    rgb[7, 5] = (9, 200, 9)
    Image.fromarray(rgb).save(masks / '01_mask.png')
    with pytest.raises(Exception, match=r'01_mask\.png: pixel \(x=5, y=7\) has colour \(9, 200, 9\), '
                                        r'which is not in the palette \(1 pixels'):
        convert_masks.main([config, '--splits', 'train', '--overwrite', '--ignore-colour',
                            '250,250,250'])
    assert (masks / '00_mask.png').read_bytes() != before['00_mask.png']  # converted in place
    assert np.asarray(Image.open(masks / '00_mask.png')).ndim == 2
    assert np.asarray(Image.open(masks / '01_mask.png')).ndim == 3  # refused: left as it was
