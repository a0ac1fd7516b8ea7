"""tools/classify.py and tools/eval_imagenet.py on a tiny ImageFolder with a tiny checkpoint whose
head makes every prediction known in advance."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmbixt.checkpoint import CheckpointError
from mmbixt.models.classifiers import BiXTClassifier

from conftest import load_tool, write_released_checkpoint

TINY = dict(embed_dims=32, num_heads=2, num_latents=4, num_layers=1, tokenizer='linear',
            patch_size=16, stride=16, layer_scale=False)
# The head ranks these classes first, whatever the image: 0 (tench), 1, then 500..502.
BIAS = {0: 5.0, 1: 4.0, 500: 3.0, 501: 3.0, 502: 3.0}
# Images per class folder (ImageNet indices 0, 1, 2): top-1 hits 3 of 6, top-5 hits 5 of 6.
FOLDERS = {'n01440764': 3, 'n01443537': 2, 'n01484850': 1}


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = BiXTClassifier(TINY, num_classes=1000)
    state = {k.removeprefix('core.'): v for k, v in model.state_dict().items()}
    state['head.weight'] = torch.zeros(1000, 32)
    state['head.bias'] = torch.zeros(1000)
    for index, value in BIAS.items():
        state['head.bias'][index] = value
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.zip'
    return write_released_checkpoint(path, state, 'bixt_tiny_l4_p16', zip_folder='tiny')


@pytest.fixture(scope='module')
def val_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('val')
    rng = np.random.default_rng(0)
    for synset, count in FOLDERS.items():
        (root / synset).mkdir()
        for i in range(count):
            pixels = rng.integers(0, 256, (30 + 7 * i, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / synset / f'{i}.png')
    return root


def test_classify_prints_top5(tiny_checkpoint: Path, val_dir: Path, capsys) -> None:
    images = sorted(str(p) for p in val_dir.glob('*/*.png'))[:2]
    load_tool('classify').main([str(tiny_checkpoint), *images, '--arch', json.dumps(TINY),
                                '--device', 'cpu'])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == images[0] and len(out) == 2 * 6
    total = sum(math.exp(v) for v in BIAS.values()) + (1000 - len(BIAS))
    first = out[1].split()
    assert first[:3] == [f'{100 * math.exp(5.0) / total:.2f}%', '0', 'n01440764']
    assert 'tench' in out[1] and out[2].split()[1] == '1'
    assert {line.split()[1] for line in out[3:6]} == {'500', '501', '502'}


def test_classify_names_a_truncated_image(tiny_checkpoint: Path, val_dir: Path,
                                          tmp_path: Path) -> None:
    whole = tmp_path / 'whole.jpg'
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(whole)
    cut = tmp_path / 'cut.jpg'
    cut.write_bytes(whole.read_bytes()[:300])
    with pytest.raises(Exception, match=f'{cut} is not a readable image'):
        load_tool('classify').main([str(tiny_checkpoint), str(cut), '--arch', json.dumps(TINY),
                                    '--device', 'cpu'])


def test_classify_reads_the_stored_name(tiny_checkpoint: Path, val_dir: Path) -> None:
    # No --arch: the stored name is used, and it is not a released classifier.
    image = str(next(val_dir.glob('*/*.png')))
    with pytest.raises(CheckpointError, match='bixt_tiny_l4_p16.*not a released'):
        load_tool('classify').main([str(tiny_checkpoint), image, '--device', 'cpu'])


@pytest.mark.parametrize('limit, acc1, acc5', [
    (None, 100 * 3 / 6, 100 * 5 / 6),
    (3, 100 * 2 / 3, 100 * 2 / 3),  # samples 0, 2, 5: tench, tench, and one of the third class
])
def test_eval_imagenet_accuracy(tiny_checkpoint: Path, val_dir: Path, capsys, limit, acc1,
                                acc5) -> None:
    argv = [str(tiny_checkpoint), '--data', str(val_dir), '--arch', json.dumps(TINY),
            '--batch-size', '4', '--workers', '0', '--device', 'cpu']
    result = load_tool('eval_imagenet').main(argv + (['--limit', str(limit)] if limit else []))
    out = capsys.readouterr().out
    assert result == pytest.approx((acc1, acc5))
    assert f'Acc@1 {acc1:.3f}  Acc@5 {acc5:.3f}' in out
    assert f'of {len(FOLDERS)} classes' in out and 'published' not in out


def test_eval_imagenet_refuses_unknown_folders(tiny_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / 'cats').mkdir()
    Image.new('RGB', (8, 8)).save(tmp_path / 'cats' / 'a.png')
    with pytest.raises(SystemExit, match='not ImageNet-1k synsets'):
        load_tool('eval_imagenet').main([str(tiny_checkpoint), '--data', str(tmp_path), '--arch',
                                         json.dumps(TINY), '--workers', '0', '--device', 'cpu'])
