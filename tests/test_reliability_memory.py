"""Bounded memory whatever the image size: the segmentor resizes logits and takes the argmax in
tiles (never one full-size [classes, H, W] array), tools/infer.py draws from shrunk arrays, and
an image beyond PIL's decompression-bomb limit is refused naming the file."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmseg.structures import SegDataSample
from PIL import Image

from conftest import REPO, load_tool
from mmbixt.datasets import make_synthetic_ade20k
from mmbixt.models.segmentors import postprocess
from mmbixt.operations.visualization import segmentation

CONFIG = str(REPO / 'configs' / 'bixt' / 'demo_upernet_bixt_ti.py')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    from mmseg.apis import init_model
    torch.manual_seed(0)
    model = init_model(CONFIG, None, device='cpu')
    path = tmp_path_factory.mktemp('model') / 'random.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


@pytest.mark.parametrize('align_corners', [False, True])
def test_tiles_give_mmseg_resize_and_argmax(monkeypatch, align_corners):
    monkeypatch.setattr(postprocess, 'TILE_ELEMENTS', 7 * 7 * 6)  # 7x7 tiles of 6 classes
    logits = torch.randn(6, 9, 13, generator=torch.Generator().manual_seed(0))
    whole = F.interpolate(logits[None], size=(40, 23), mode='bilinear',
                          align_corners=align_corners)[0]
    tiled = postprocess.predict_in_tiles(logits, (40, 23), align_corners)
    assert tiled.shape == (1, 40, 23) and tiled.dtype == torch.long
    assert torch.equal(tiled[0], whole.argmax(0))


def test_one_channel_heads_are_thresholded_in_tiles(monkeypatch):
    monkeypatch.setattr(postprocess, 'TILE_ELEMENTS', 25)
    logits = torch.randn(1, 6, 5, generator=torch.Generator().manual_seed(1))
    whole = F.interpolate(logits[None], size=(17, 11), mode='bilinear', align_corners=False)[0]
    assert torch.equal(postprocess.predict_in_tiles(logits, (17, 11), False, threshold=0.3),
                       (whole.sigmoid() > 0.3).to(logits.dtype))


def test_the_segmentor_undoes_padding_and_flips_as_mmseg_does():
    from mmseg.apis import init_model
    model = init_model(CONFIG, None, device='cpu')
    logits = torch.randn(2, 5, 16, 20, generator=torch.Generator().manual_seed(2))
    metas = [dict(ori_shape=(61, 70), padding_size=[0, 3, 0, 2]),
             dict(ori_shape=(33, 90), img_padding_size=[1, 0, 2, 0], flip=True,
                  flip_direction='horizontal')]
    results = {}
    for limit in (10 ** 9, 0):  # mmseg's path, the tiled path
        model.test_cfg['max_full_logits'] = limit
        samples = model.postprocess_result(logits, [SegDataSample(metainfo=m) for m in metas])
        results[limit] = [s.pred_sem_seg.data for s in samples]
    assert all(torch.equal(a, b) for a, b in zip(*results.values()))


def test_test_tool_writes_the_same_predictions_in_tiles(checkpoint, tmp_path, monkeypatch):
    from mmbixt.models.segmentors import bixt_encoder_decoder
    tiled = []
    monkeypatch.setattr(bixt_encoder_decoder, 'postprocess_in_tiles',
                        lambda *args: tiled.append(postprocess.postprocess_in_tiles(*args)))
    data = make_synthetic_ade20k(tmp_path / 'data', num_train=1, num_val=2)
    outputs = []
    for limit in ('1000000000', '0'):
        out = tmp_path / f'pred_{limit}'
        load_tool('test').main([CONFIG, str(checkpoint), '--work-dir', str(tmp_path / limit),
                                '--out', str(out), '--cfg-options',
                                f'test_dataloader.dataset.data_root={data}',
                                f'model.test_cfg.max_full_logits={limit}'])
        outputs.append({p.name: np.asarray(Image.open(p)) for p in sorted(out.glob('*.png'))})
    assert len(tiled) == 2  # the second run, every image
    assert len(outputs[0]) == 2 and outputs[0].keys() == outputs[1].keys()
    assert all(np.array_equal(outputs[0][k], outputs[1][k]) for k in outputs[0])


def test_infer_on_a_large_image_never_resizes_to_full_size_or_draws_it(checkpoint, tmp_path,
                                                                        monkeypatch):
    height, width = 1800, 2500
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    picture = np.broadcast_to(gradient, (height, width, 3)).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / 'big.jpg')
    largest = {'resize': 0, 'drawn': 0}
    interpolate, show = F.interpolate, segmentation.show

    def recording_interpolate(*args, **kwargs):
        result = interpolate(*args, **kwargs)
        largest['resize'] = max(largest['resize'], result.numel())
        return result

    def recording_show(axes, pixels, *args):
        largest['drawn'] = max(largest['drawn'], *pixels.shape[:2])
        return show(axes, pixels, *args)

    monkeypatch.setattr(F, 'interpolate', recording_interpolate)
    monkeypatch.setattr(segmentation, 'show', recording_show)
    monkeypatch.setattr(postprocess, 'TILE_ELEMENTS', 5 * width * 64)  # strips of 64 rows
    written = load_tool('infer').main([CONFIG, str(checkpoint), str(tmp_path / 'big.jpg'),
                                       '--out-dir', str(tmp_path / 'out'), '--layers', '0',
                                       '--cfg-options', 'model.test_cfg.max_full_logits=1000000'])
    assert [p.name for p in written] == ['big_bixt.png']
    assert 0 < largest['resize'] <= postprocess.TILE_ELEMENTS  # 5 classes: never full size
    assert largest['drawn'] == segmentation.DRAW_MAX_SIDE


def test_an_image_beyond_the_bomb_limit_is_named_with_the_way_to_raise_it(tmp_path, monkeypatch):
    from mmbixt.datasets.image_files import InputFileError, read_image
    Image.new('RGB', (300, 200)).save(tmp_path / 'wide.png')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 20000)  # 60000 pixels: over twice the limit
    with pytest.raises(InputFileError) as error:
        read_image(str(tmp_path / 'wide.png'))
    assert str(error.value) == (
        f'{tmp_path / "wide.png"} has more pixels than the limit of 20000 that guards against '
        'decompression bombs; if you trust the file, raise it, e.g. '
        'MMBIXT_MAX_IMAGE_PIXELS=400000000 (0 lifts it)')
    monkeypatch.setenv('MMBIXT_MAX_IMAGE_PIXELS', '0')
    assert read_image(str(tmp_path / 'wide.png')).shape == (200, 300, 3)
    assert Image.MAX_IMAGE_PIXELS == 20000  # restored


def test_tta_keeps_full_size_logits_for_merging(checkpoint):
    """SegTTAModel averages each augmentation's full-size seg_logits: --tta turns tiling off."""
    tool = load_tool('test')
    cfg = tool.build_config(tool.parse_args([CONFIG, str(checkpoint), '--tta', '--cfg-options',
                                             'model.test_cfg.max_full_logits=0']))
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module.test_cfg.max_full_logits is None
