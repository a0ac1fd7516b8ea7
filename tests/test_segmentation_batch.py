"""Images of different sizes in one batch: each image gets exactly its batch-1 logits (whole,
slide), is cropped back to its own size, and a padded training crop gives the backbone outputs of
the crop unpadded."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.structures import SegDataSample

import mmbixt  # noqa: F401  (registers)
from mmbixt.models.segmentors.bixt_encoder_decoder import valid_shapes_of
from mmseg.registry import MODELS

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / 'configs' / 'bixt' / 'demo_upernet_bixt_ti.py'
ARCHS = {'linear_s8': dict(tokenizer='linear', patch_size=16, stride=8),
         'conv_p16': dict(tokenizer='conv', patch_size=16, stride=16)}
ALONE = (70, 90)  # batched with larger images
LARGER = ((100, 122), (83, 131))

init_default_scope('mmseg')


# Small models on one torch thread: faster, above all on a busy machine.
pytestmark = pytest.mark.usefixtures('one_thread')


def tiny_model(tokenizer: str = 'linear_s8', mode: str = 'whole'):
    cfg = Config.fromfile(DEMO)
    cfg.model.backbone.arch = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=4,
                                   **ARCHS[tokenizer])
    cfg.model.test_cfg = dict(mode=mode, crop_size=(64, 64), stride=(40, 40))
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def image(height: int, width: int, seed: int) -> dict:
    """One packed test sample as PackSegInputs gives it (uint8 BGR ``[3, H, W]``)."""
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8)
    # ori_shape differs: the logits are also resized back to the file's size.
    sample = SegDataSample(metainfo=dict(img_shape=(height, width),
                                         ori_shape=(height + 7, width - 5)))
    return dict(inputs=pixels, data_samples=sample)


def batch(items: list[dict]) -> dict:
    items = copy.deepcopy(items)
    return dict(inputs=[i['inputs'] for i in items], data_samples=[i['data_samples'] for i in items])


@pytest.mark.parametrize('mode', ['whole', 'slide'])
@pytest.mark.parametrize('tokenizer', sorted(ARCHS))
def test_test_step_gives_an_image_its_batch_one_logits(tokenizer: str, mode: str):
    model = tiny_model(tokenizer, mode)
    items = [image(*LARGER[0], seed=1), image(*ALONE, seed=0), image(*LARGER[1], seed=2)]
    with torch.no_grad():
        together = model.test_step(batch(items))
        for item, result in zip(items, together):
            alone = model.test_step(batch([item]))[0]
            ori_shape = item['data_samples'].ori_shape
            assert result.seg_logits.shape[-2:] == ori_shape  # cropped back, then resized
            torch.testing.assert_close(result.seg_logits.data, alone.seg_logits.data,
                                       rtol=1e-5, atol=1e-5)
            assert torch.equal(result.pred_sem_seg.data, alone.pred_sem_seg.data)


def test_preprocessor_pads_mixed_test_batches_and_records_the_padding():
    model = tiny_model()
    preprocessor = model.data_preprocessor
    items = [image(*ALONE, seed=0), image(*LARGER[0], seed=1)]
    data = preprocessor(batch(items), False)
    data = preprocessor(dict(inputs=batch(items)['inputs'], data_samples=data['data_samples']),
                        False)  # samples seen before: the padding is recorded afresh
    assert data['inputs'].shape == (2, 3, 100, 122)
    first = data['data_samples'][0]
    assert first.img_shape == ALONE and first.img_padding_size == [0, 32, 0, 30]
    assert first.pad_shape == (100, 122)
    alone = preprocessor(batch(items[:1]), False)['inputs'][0]
    assert torch.equal(data['inputs'][0, :, :70, :90], alone)
    assert not data['inputs'][0, :, 70:].any() and not data['inputs'][0, :, :, 90:].any()
    assert valid_shapes_of(data['inputs'], [s.metainfo for s in data['data_samples']]) == [
        ALONE, LARGER[0]]
    with pytest.raises(ValueError, match='needs its data samples'):
        preprocessor(dict(inputs=batch(items)['inputs']), False)


@pytest.mark.parametrize('training', [False, True])
def test_preprocessor_is_mmsegs_when_nothing_differs(training: bool):
    model = tiny_model()
    cfg = Config.fromfile(DEMO).model.data_preprocessor
    cfg.type = 'SegDataPreProcessor'
    reference = MODELS.build(cfg)
    assert type(reference) is SegDataPreProcessor
    items = [image(40, 56, seed=0), image(40, 56, seed=1)]
    ours, theirs = model.data_preprocessor(batch(items), training), reference(batch(items), training)
    assert torch.equal(ours['inputs'], theirs['inputs'])
    assert ([s.metainfo for s in ours['data_samples']] ==
            [s.metainfo for s in theirs['data_samples']])


def test_a_padded_training_crop_gives_the_backbone_outputs_of_the_crop_unpadded():
    model = tiny_model().train()
    item = image(72, 100, seed=3)  # smaller than the 128x128 crop size: padded in training
    data = model.data_preprocessor(batch([item, image(128, 128, seed=4)]), True)
    assert data['inputs'].shape[-2:] == (128, 128)
    metas = [s.metainfo for s in data['data_samples']]
    valid_shapes = valid_shapes_of(data['inputs'], metas)
    assert valid_shapes == [(72, 100), (128, 128)]
    padded = model.backbone(data['inputs'], valid_shapes=valid_shapes)
    unpadded = model.backbone(data['inputs'][:1, :, :72, :100])
    for out_padded, out_alone in zip(padded, unpadded):
        grid = out_alone.shape[-2:]  # ceil(72/8) x ceil(100/8)
        torch.testing.assert_close(out_padded[:1, :, :grid[0], :grid[1]], out_alone,
                                   rtol=1e-5, atol=1e-5)
        assert not out_padded[0, :, grid[0]:].any() and not out_padded[0, :, :, grid[1]:].any()


# ---------------------------------------------------------------- through the test tools
@pytest.fixture(scope='module')
def random_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """The demo model with random weights, and five validation images of different sizes."""
    from mmbixt.datasets import make_synthetic_ade20k
    root = tmp_path_factory.mktemp('batch_tools')
    data = make_synthetic_ade20k(root / 'data', num_train=1, num_val=5)
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(DEMO).model)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, root / 'random.pth')
    return root / 'random.pth', data


def tool_outputs(tool: Path, checkpoint: Path, data: Path, out: Path, batch_size: int,
                 *extra: str) -> tuple[str, dict[str, bytes]]:
    """The metrics table and summary of a test run, and the label maps it wrote."""
    from test_mmseg_tools import run
    proc = run(tool, DEMO, checkpoint, '--work-dir', out / 'work', '--out', out / 'maps', *extra,
               '--cfg-options', f'test_dataloader.dataset.data_root={data}',
               f'test_dataloader.batch_size={batch_size}')
    log = proc.stdout + proc.stderr
    table = re.findall(r'^[|+].*[|+]$', log, flags=re.M)  # the per-class IoU / Acc table
    summary = re.findall(r'aAcc: [\d.]+\s+mIoU: [\d.]+\s+mAcc: [\d.]+', log)
    maps = {p.name: p.read_bytes() for p in sorted((out / 'maps').glob('*.png'))}
    return '\n'.join(table + summary[-1:]), maps




@pytest.mark.parametrize('tta', [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=['single-scale', 'tta'])
def test_the_test_tools_give_the_same_metrics_and_maps_at_batch_1_and_4(random_checkpoint, tmp_path,
                                                                         tta: bool):
    from test_mmseg_tools import MMSEG_TOOLS
    checkpoint, data = random_checkpoint
    ours = Path('tools/test.py')
    extra = ('--tta',) if tta else ()
    table_1, maps_1 = tool_outputs(ours, checkpoint, data, tmp_path / 'b1', 1, *extra)
    table_4, maps_4 = tool_outputs(ours, checkpoint, data, tmp_path / 'b4', 4, *extra)
    assert len(maps_1) == 5 and 'mIoU' in table_1
    assert table_4 == table_1 and maps_4 == maps_1
    if not tta:  # the installed mmseg's own tool, batched
        table_m, maps_m = tool_outputs(MMSEG_TOOLS / 'test.py', checkpoint, data, tmp_path / 'm4', 4)
        assert table_m == table_1 and maps_m == maps_1


def test_losses_are_mmsegs_on_an_unpadded_batch():
    from mmengine.structures import PixelData
    from mmseg.models.segmentors import EncoderDecoder
    model = tiny_model().eval()  # no dropout: both calls see the same network
    samples = []
    for seed in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64)))
        gen = torch.Generator().manual_seed(seed)
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, 64, 64), generator=gen))
        samples.append(sample)
    inputs = torch.randn(2, 3, 64, 64)
    ours = model.loss(inputs, samples)
    theirs = EncoderDecoder.loss(model, inputs, samples)
    assert ours.keys() == theirs.keys() and {'decode.loss_ce', 'aux.loss_ce'} <= ours.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)
