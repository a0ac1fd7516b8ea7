"""Images as users feed them to tools/infer.py (mmseg's inference API underneath): grayscale, RGBA
and palette files, images smaller than one patch and extreme aspect ratios all give a readable
figure; a corrupt file, a FIFO or a folder stops the run with its name before any model is loaded;
equal names in different folders never share an output; --amp runs under autocast."""
from __future__ import annotations

import importlib.util
import os
import re
import signal

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
    assert written == [tmp_path / 'out' / f'in_{mode}_bixt.png']  # one figure per image
    with Image.open(written[0]) as figure:
        assert figure.width >= 1200 and figure.height >= 256  # readable even for a 3x2 input


def test_same_names_in_two_folders_give_two_figures(infer, checkpoint, tmp_path, capsys):
    for folder in 'ab':
        (tmp_path / folder).mkdir()
    first = picture(tmp_path / 'a' / 'x.png', 'RGB', (40, 30))
    second = picture(tmp_path / 'b' / 'x.png', 'L', (30, 40))
    out = tmp_path / 'out'
    written = infer.main([CONFIG, str(checkpoint), first, second, '--out-dir', str(out),
                          '--layers', '3'])
    assert written == [out / 'a' / 'x_bixt.png', out / 'b' / 'x_bixt.png']
    with Image.open(written[0]) as a, Image.open(written[1]) as b:
        assert a.size != b.size  # each drawn from its own image (landscape vs portrait)
    printed = capsys.readouterr().out
    assert f'{first} -> {written[0]}' in printed and f'{second} -> {written[1]}' in printed


def test_fifo_and_folder_are_refused_without_blocking(infer, checkpoint, tmp_path):
    fifo = tmp_path / 'pipe.png'
    os.mkfifo(fifo)

    def blocked(*_):
        raise AssertionError('tools/infer.py blocked on the FIFO')  # not an OSError

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(20)  # opening a FIFO blocks until a writer comes: fail instead of hanging
    try:
        refused = re.escape(f'{fifo} is a FIFO (named pipe), not a regular file')
        with pytest.raises(SystemExit, match=refused):
            infer.main([CONFIG, str(checkpoint), str(fifo), '--out-dir', str(tmp_path / 'o')])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    with pytest.raises(SystemExit, match=re.escape(f'{tmp_path} is a directory')):
        infer.main([CONFIG, str(checkpoint), str(tmp_path), '--out-dir', str(tmp_path / 'o')])
    assert not (tmp_path / 'o').exists()


def test_amp_runs_under_autocast(infer, checkpoint, tmp_path):
    """--amp: bf16 autocast where this CPU has native bf16; fp32 (no autocast) where it has not."""
    from mmbixt.compat import cpu_capability
    with infer.autocast('cpu', True):
        assert torch.is_autocast_enabled('cpu') == cpu_capability().bf16
        if cpu_capability().bf16:
            assert torch.get_autocast_dtype('cpu') == torch.bfloat16
    with infer.autocast('cpu', False):
        assert not torch.is_autocast_enabled('cpu')
    image = picture(tmp_path / 'x.png', 'RGB', (48, 40))
    written = infer.main([CONFIG, str(checkpoint), image, '--out-dir', str(tmp_path / 'out'),
                          '--layers', '3', '--amp'])
    assert [p.name for p in written] == ['x_bixt.png'] and written[0].is_file()


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


def test_classes_and_label_convention_come_from_the_config_when_the_checkpoint_lacks_them(
        infer, checkpoint):
    from mmengine.config import Config
    config = Config.fromfile(CONFIG)
    model = infer.load_model(config, str(checkpoint), 'cpu')
    assert model.dataset_meta is None  # not mmseg's Cityscapes fallback
    names, palette = infer.class_meta(model, config)
    assert names == ['sky', 'grass', 'water', 'sand', 'brick'] and len(palette) == 5
    assert infer.zero_label_is_unlabelled(config)  # ADE20K layout: 0 = other
