"""The fused resize + argmax (mmbixt/models/segmentors/postprocess.py) gives mmseg's labels from
the decode head's logits: one resize or mmseg's two (padding, flips, original size), whole and
slide inference, the pruned and the dense way; ties and the bf16 difference pinned."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmbixt  # noqa: F401  (registers)
from conftest import REPO
from mmbixt.models.inference import fast_inference
from mmbixt.models.segmentors import postprocess
from mmbixt.models.segmentors.postprocess import (CandidatePlan, dense_labels, image_axis_maps,
                                                  predict_labels, resize_map)

init_default_scope('mmseg')
pytestmark = pytest.mark.usefixtures('one_thread')
DEMO = REPO / 'configs' / 'bixt' / 'demo_upernet_bixt_ti.py'


def smooth_logits(classes: int, height: int, width: int, seed: int, scale: int = 4
                  ) -> torch.Tensor:
    """Logits that vary over ``scale`` pixels, as a head's do (most windows: one candidate)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, classes, height // scale + 1, width // scale + 1, generator=gen) * 4
    return F.interpolate(coarse, size=(height, width), mode='bilinear')[0]


def assert_labels_match(labels: torch.Tensor, values: torch.Tensor) -> None:
    """``labels`` are ``values.argmax(0)`` except where the two best differ by rounding."""
    expected = values.argmax(0)
    top2 = values.topk(2, dim=0).values
    near_tie = (top2[0] - top2[1]) <= 1e-5 * values.abs().max()
    assert torch.equal(labels[~near_tie], expected[~near_tie])
    assert near_tie.float().mean() < 1e-3


def resized(logits: torch.Tensor, size, align_corners: bool) -> torch.Tensor:
    return F.interpolate(logits[None], size=size, mode='bilinear', align_corners=align_corners)[0]


@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('shape', [(6, 9, 13, 40, 23), (20, 32, 24, 128, 96), (5, 20, 20, 7, 9),
                                   (3, 1, 5, 4, 11)])
def test_one_resize_gives_mmseg_labels(shape, align_corners):
    classes, height, width, out_h, out_w = shape
    for logits in (torch.randn(classes, height, width, generator=torch.Generator().manual_seed(0)),
                   smooth_logits(classes, height, width, seed=1)):
        rows = resize_map(out_h, height, align_corners)
        cols = resize_map(out_w, width, align_corners)
        labels = predict_labels(logits, rows, cols)
        assert labels.shape == (1, out_h, out_w) and labels.dtype == torch.long
        assert_labels_match(labels[0], resized(logits, (out_h, out_w), align_corners))
        assert torch.equal(labels, dense_labels(logits, rows, cols))


@pytest.mark.parametrize('flip', [None, 'horizontal', 'vertical'])
@pytest.mark.parametrize('align_corners', [False, True])
def test_mmseg_two_resizes_padding_and_flip_compose_into_one_map(flip, align_corners):
    logits = smooth_logits(30, 32, 40, seed=2)
    meta = dict(ori_shape=(150, 133), padding_size=[0, 12, 3, 20])
    if flip:
        meta.update(flip=True, flip_direction=flip)
    padded = (128, 160)
    # mmseg: predict_by_feat resizes to the padded input, postprocess_result crops, flips, resizes.
    full = resized(logits, padded, align_corners)[:, 3:128 - 20, 0:160 - 12]
    if flip:
        full = full.flip(-1 if flip == 'horizontal' else -2)
    expected = resized(full, meta['ori_shape'], align_corners)
    rows, cols = image_axis_maps(meta, padded, logits.shape[1:], align_corners, resized_to=padded)
    assert (rows.taps, cols.taps) == (3, 3)
    assert_labels_match(predict_labels(logits, rows, cols)[0], expected)


def test_a_crop_reaching_outside_the_resized_logits_has_no_map():
    meta = dict(ori_shape=(50, 50), padding_size=[0, 0, 0, 0])
    assert image_axis_maps(meta, (64, 64), (16, 16), False, resized_to=(40, 64)) is None


def test_most_windows_need_no_interpolation_and_noise_takes_the_dense_way(monkeypatch):
    logits = smooth_logits(20, 64, 64, seed=3, scale=16)
    rows, cols = resize_map(256, 64, False), resize_map(256, 64, False)
    plan = CandidatePlan.of(logits, rows, cols, margin=1e-5)
    assert (plan.count == 1).float().mean() > 0.5
    assert plan.sparse_work() < plan.dense_work() / 4
    noise = torch.randn(150, 8, 8, generator=torch.Generator().manual_seed(4))
    dense = []
    monkeypatch.setattr(postprocess, 'dense_labels',
                        lambda *a: dense.append(1) or dense_labels(*a))
    labels = predict_labels(noise, resize_map(64, 8, False), resize_map(64, 8, False))
    assert dense == [1]
    assert_labels_match(labels[0], resized(noise, (64, 64), False))


def test_logits_past_the_plan_limit_take_the_strips(monkeypatch):
    logits = smooth_logits(6, 16, 16, seed=9)
    rows, cols = resize_map(40, 16, False), resize_map(40, 16, False)
    pruned = predict_labels(logits, rows, cols)
    monkeypatch.setattr(postprocess, 'PLAN_ELEMENTS', logits.numel() - 1)
    monkeypatch.setattr(postprocess, 'CandidatePlan', None)  # never built
    assert torch.equal(predict_labels(logits, rows, cols), pruned)


def test_exact_ties_go_to_the_lower_class_as_argmax():
    logits = smooth_logits(4, 8, 8, seed=5)
    logits[3] = logits[1] = logits.max(0).values + 1  # classes 1 and 3 tie everywhere
    labels = predict_labels(logits, resize_map(30, 8, False), resize_map(30, 8, False))
    assert torch.equal(labels, torch.ones(1, 30, 30, dtype=torch.long))
    assert torch.equal(resized(logits, (30, 30), False).argmax(0), labels[0])


def test_bf16_logits_are_resized_in_fp32_where_mmseg_rounds_them_to_a_tie():
    """The one named difference: mmseg resizes bf16 logits in bf16, where 1 + 2**-8 rounds to 1
    and ties class 1 with class 0 (argmax: class 0); the fused path resizes in fp32 (class 1)."""
    logits = torch.tensor([[[1.0, 1.0]], [[1.0, 1.0 + 2 ** -7]]], dtype=torch.bfloat16)
    mmseg = resized(logits, (1, 3), True).argmax(0)
    fused = predict_labels(logits, resize_map(1, 1, True), resize_map(3, 2, True))
    assert mmseg.tolist() == [[0, 0, 1]] and fused[0].tolist() == [[0, 1, 1]]


def test_nan_logits_are_classified_as_mmseg_does():
    logits = smooth_logits(5, 8, 8, seed=6)
    logits[2, 3, 3] = float('nan')
    labels = predict_labels(logits, resize_map(32, 8, False), resize_map(32, 8, False))
    assert torch.equal(labels[0], resized(logits, (32, 32), False).argmax(0))


def test_one_channel_heads_are_thresholded():
    logits = smooth_logits(1, 6, 5, seed=7)
    labels = predict_labels(logits, resize_map(17, 6, False), resize_map(11, 5, False), 0.3)
    assert labels.dtype == logits.dtype
    assert torch.equal(labels[0], (resized(logits, (17, 11), False)[0].sigmoid() > 0.3).float())


def test_chunks_and_strips_give_the_same_labels(monkeypatch):
    logits = smooth_logits(12, 24, 24, seed=8)
    rows, cols = resize_map(90, 24, False), resize_map(70, 24, False)
    whole = predict_labels(logits, rows, cols)
    monkeypatch.setattr(postprocess, 'TILE_ELEMENTS', 97)
    assert torch.equal(predict_labels(logits, rows, cols), whole)
    assert torch.equal(dense_labels(logits, rows, cols), whole)


# ------------------------------------------------------------------------ the segmentor
def tiny_segmentor(mode: str):
    cfg = Config.fromfile(DEMO)
    cfg.model.backbone.arch = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=4,
                                   tokenizer='linear', patch_size=16, stride=8)
    cfg.model.test_cfg = dict(mode=mode, crop_size=(64, 64), stride=(40, 40))
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def mixed_batch() -> dict:
    """Two images of different sizes (the smaller padded), one flipped, both resized back to an
    original size of their own."""
    inputs, samples = [], []
    for seed, (height, width), flip in ((0, (70, 90), True), (1, (100, 122), False)):
        gen = torch.Generator().manual_seed(seed)
        inputs.append(torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8))
        meta = dict(img_shape=(height, width), ori_shape=(height + 9, width - 7))
        if flip:
            meta.update(flip=True, flip_direction='horizontal')
        samples.append(SegDataSample(metainfo=meta))
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('mode', ['whole', 'slide'])
def test_the_segmentor_predicts_mmseg_labels_without_full_size_logits(mode):
    model = tiny_segmentor(mode)
    data = mixed_batch()
    results = {}
    for keep in (True, False):
        model.test_cfg['keep_seg_logits'] = keep
        with torch.no_grad():
            results[keep] = model.test_step(copy.deepcopy(data))
    for kept, fused in zip(results[True], results[False]):
        assert 'seg_logits' in kept and 'seg_logits' not in fused
        assert fused.pred_sem_seg.shape == kept.pred_sem_seg.shape == kept.ori_shape
        assert_labels_match(fused.pred_sem_seg.data[0], kept.seg_logits.data)


def test_fast_inference_predicts_without_full_size_logits_unless_asked():
    model = tiny_segmentor('whole')
    data = mixed_batch()
    with fast_inference(model):
        assert all('seg_logits' not in r for r in model.test_step(copy.deepcopy(data)))
        model.test_cfg['keep_seg_logits'] = True
        assert all('seg_logits' in r for r in model.test_step(copy.deepcopy(data)))
    model.test_cfg.pop('keep_seg_logits')
    with torch.no_grad():
        assert all('seg_logits' in r for r in model.test_step(copy.deepcopy(data)))
