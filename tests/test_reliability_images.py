"""One image reader for tools/infer.py, tools/classify.py and tools/eval_imagenet.py: 16-bit files
are scaled by their bit depth exactly as tools/test.py's loader (mmcv) reads them, not clipped to
white; eval_imagenet names a truncated image (also from a loader worker) and refuses --limit 0."""
from __future__ import annotations

import argparse
import json

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from conftest import REPO, load_tool
from mmbixt.datasets.image_files import read_image
from mmbixt.operations.cli import run_cli
from test_classify_tools import TINY, tiny_checkpoint  # noqa: F401  (fixture)

CONFIG = str(REPO / 'configs' / 'bixt' / 'demo_upernet_bixt_ti.py')


@pytest.fixture
def sixteen_bit(tmp_path) -> tuple[str, np.ndarray]:
    """A 16-bit grayscale PNG spanning 0..65535, and the 8-bit RGB tools/test.py reads from it."""
    values = np.linspace(0, 65535, 48 * 64).round().astype(np.uint16).reshape(48, 64)
    path = tmp_path / 'deep.png'
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == 'I;16'
    return str(path), mmcv.imread(str(path))[..., ::-1]  # mmcv/OpenCV reads BGR


def test_the_reader_reads_16_bit_as_tools_test_does(sixteen_bit):
    path, expected = sixteen_bit
    image = read_image(path)
    assert image.dtype == np.uint8 and image.max() == 255 and image.min() == 0
    assert np.array_equal(image, expected)  # not clipped: PIL's convert('RGB') gives 255 nearly all


def test_infer_reads_16_bit_images_scaled(sixteen_bit):
    path, expected = sixteen_bit
    args = argparse.Namespace(images=[path], gt=None)
    [(_, image, _)] = load_tool('infer').read_inputs(args, Config.fromfile(CONFIG))
    assert np.array_equal(image, expected)


def test_classify_feeds_the_scaled_image_to_the_model(sixteen_bit, tmp_path):
    path, expected = sixteen_bit
    Image.fromarray(np.ascontiguousarray(expected)).save(tmp_path / 'eight.png')
    seen = []

    def model(batch):
        seen.append(batch)
        return torch.zeros(1, 10)

    tool = load_tool('classify')
    to_tensor = lambda image: torch.from_numpy(np.asarray(image).copy())  # noqa: E731
    tool.classify(model, to_tensor, [path, str(tmp_path / 'eight.png')], 'cpu')
    assert torch.equal(seen[0], seen[1])


def test_eval_imagenet_reads_16_bit_images_scaled(sixteen_bit, tmp_path):
    path, expected = sixteen_bit
    (tmp_path / 'val' / 'n01440764').mkdir(parents=True)
    Image.open(path).save(tmp_path / 'val' / 'n01440764' / 'a.png')
    dataset = load_tool('eval_imagenet').imagenet_folder(str(tmp_path / 'val'), transform=None)
    assert np.array_equal(np.asarray(dataset[0][0]), expected)


def eval_argv(checkpoint, data, *extra) -> list[str]:
    return [str(checkpoint), '--data', str(data), '--arch', json.dumps(TINY), '--device', 'cpu',
            '--batch-size', '2', *extra]


@pytest.mark.parametrize('workers', [0, 1])
def test_eval_imagenet_names_a_truncated_image(tiny_checkpoint, tmp_path, capsys,  # noqa: F811
                                               workers):
    folder = tmp_path / 'val' / 'n01440764'
    folder.mkdir(parents=True)
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(folder / 'a.jpg')
    (folder / 'b.jpg').write_bytes((folder / 'a.jpg').read_bytes()[:300])
    status = run_cli(load_tool('eval_imagenet').main,
                     eval_argv(tiny_checkpoint, tmp_path / 'val', '--workers', str(workers)))
    assert status == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f'error: {folder / "b.jpg"} is not a readable image (OSError: ')


def test_eval_imagenet_refuses_limit_0(tiny_checkpoint, tmp_path, capsys):  # noqa: F811
    with pytest.raises(SystemExit):
        load_tool('eval_imagenet').main(eval_argv(tiny_checkpoint, tmp_path, '--limit', '0'))
    assert ('--limit: 0: give at least 1 image (leave --limit out to evaluate them all)'
            in capsys.readouterr().err)


@pytest.mark.parametrize('suffix', ['.jpg', '.png'])
def test_exif_orientation_is_applied_alike_on_every_route(tmp_path, suffix):
    """A photo stored sideways with EXIF orientation 6 ("turn 90 degrees clockwise"): infer.py,
    classify.py / eval_imagenet.py and tools/test.py's loader (mmcv LoadImageFromFile) all read it
    upright, the same pixels."""
    from mmcv.transforms import LoadImageFromFile
    stored = np.zeros((24, 40, 3), np.uint8)
    stored[:, :8] = (255, 0, 0)  # a red band on the stored left edge: the top once upright
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f'sideways{suffix}'
    Image.fromarray(stored).save(path, exif=exif.tobytes(), **({'quality': 100}
                                                                  if suffix == '.jpg' else {}))
    loaded = LoadImageFromFile()(dict(img_path=str(path)))['img'][..., ::-1]  # BGR -> RGB
    assert loaded.shape == (40, 24, 3)
    image = read_image(str(path))
    assert np.array_equal(image, loaded)
    assert image[:8, :, 0].mean() > 200 and image[-8:, :, 0].mean() < 50
    args = argparse.Namespace(images=[str(path)], gt=None)
    [(_, from_infer, _)] = load_tool('infer').read_inputs(args, Config.fromfile(CONFIG))
    assert np.array_equal(from_infer, loaded)
