"""Images as users feed them to tools/infer.py (mmseg's inference API underneath): grayscale, RGBA
and palette files, images smaller than one patch and extreme aspect ratios all work; a corrupt file
stops the run with its name before any model is loaded."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO

CONFIG = str(REPO / 'configs' / 'bixt' / 'demo_upernet_bixt_ti.py')


def load_infer_tool():
    spec = importlib.util.spec_from_file_location('infer_tool', REPO / 'tools' / 'infer.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def infer():
    return load_infer_tool()


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    from mmseg.apis import init_model
    model = init_model(CONFIG, None, device='cpu')
    path = tmp_path_factory.mktemp('model') / 'untrained.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def picture(path, mode: str, size: tuple[int, int]) -> str:
    rgb = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).convert(mode).save(path)
    return str(path)


@pytest.mark.parametrize('mode, size', [('L', (61, 47)), ('RGBA', (64, 40)), ('P', (50, 50)),
                                        ('RGB', (3, 2)), ('RGB', (1500, 9)), ('RGB', (7, 900))])
def test_images_of_any_mode_and_shape_are_segmented(infer, checkpoint, tmp_path, mode, size):
    image = picture(tmp_path / f'in_{mode}.png', mode, size)
    written = infer.main([CONFIG, str(checkpoint), image, '--out-dir', str(tmp_path / 'out'),
                          '--layers', '0', '3'])
    with Image.open(tmp_path / 'out' / f'in_{mode}_overlay.png') as overlay:
        assert overlay.size == size and overlay.mode == 'RGB'
    assert len(written) == 5  # overlay + two pictures for each of the two layers


def test_corrupt_image_stops_with_its_name_before_the_model_loads(infer, checkpoint, tmp_path):
    good = picture(tmp_path / 'good.png', 'RGB', (32, 32))
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'\xff\xd8\xff\xe0 this is not really a jpeg')
    with pytest.raises(SystemExit) as info:
        infer.main([CONFIG, str(checkpoint), good, str(broken), '--out-dir', str(tmp_path / 'o')])
    assert str(broken) in str(info.value) and 'not a readable image' in str(info.value)
    assert not (tmp_path / 'o').exists()


def test_missing_image_and_bad_layers_are_named(infer, checkpoint, tmp_path):
    with pytest.raises(SystemExit, match='nowhere.png is not a readable image'):
        infer.main([CONFIG, str(checkpoint), str(tmp_path / 'nowhere.png')])
    image = picture(tmp_path / 'x.png', 'RGB', (32, 32))
    with pytest.raises(SystemExit, match=r'--layers \[7\]: the backbone runs layers 0\.\.3'):
        infer.main([CONFIG, str(checkpoint), image, '--out-dir', str(tmp_path), '--layers', '7'])
