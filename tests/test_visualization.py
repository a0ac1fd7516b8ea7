"""mmbixt.operations.visualization: which latents are shown, how inputs are read and named, and that the
figures have the panels, legends and sizes they promise."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmbixt.operations.visualization import (InputFileError, LayerAttention, figure_paths, label_paths,
                                  most_distinct, part_segmentation_figure, read_label_map,
                                  relative_attention, segmentation_figure)
from mmbixt.operations.visualization.points import project


def test_relative_attention_is_log2_of_the_ratio_to_the_latents_mean():
    maps = torch.tensor([[0.5, 0.5], [0.25, 0.75], [0.75, 0.25]]).reshape(3, 1, 2)
    expected = torch.log2(maps / maps.mean(0, keepdim=True))
    torch.testing.assert_close(relative_attention(maps), expected)


def test_most_distinct_skips_near_copies():
    base = torch.zeros(6, 4, 4)
    base[:4, 0, 0] = torch.tensor([1.0, 1.01, 0.99, 1.0])  # four near copies of one pattern
    base[4, 3, 3] = 0.8                                      # two other patterns
    base[5, 0, 3] = 0.6
    chosen = most_distinct(base, 3)
    assert chosen[0] in (0, 1, 2, 3) and sorted(chosen[1:]) == [4, 5]
    assert most_distinct(base, 10) == most_distinct(base, 6)  # at most every latent, once
    assert len(set(most_distinct(base, 6))) == 6


def attention(latents: int, size: tuple[int, int]) -> LayerAttention:
    maps = torch.rand(latents, *size, generator=torch.Generator().manual_seed(0))
    return LayerAttention(maps / maps.sum((1, 2), keepdim=True), maps.softmax(0))


@pytest.mark.parametrize('size', [(2, 3), (60, 90), (9, 1500)])
def test_segmentation_figure_panels_legend_and_size(size):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    prediction = rng.integers(0, 2, size)
    truth = np.where(rng.random(size) < 0.3, 255, 3)
    names, palette = ['sky', 'grass', 'water', 'sand', 'brick'], [[i * 50] * 3 for i in range(5)]
    figure = segmentation_figure(image, prediction, names, palette, truth,
                                 {0: attention(8, size), 2: attention(8, size)}, num_latents=3,
                                 num_layers=5)
    titles = [axes.get_title() for axes in figure.axes]
    assert titles[0].startswith(f'input ({size[1]}x{size[0]}')
    assert titles[1].startswith('prediction (') and 'labelled pixels right' in titles[1]
    assert titles[2] == 'ground truth'
    assert titles.count('latent each token reads most\n(latent ids, not classes)') == 2
    assert titles.count('mean over latents') == 2
    assert sum(bool(re.fullmatch(r'latent \d+', title)) for title in titles) == 6  # 3 per layer
    # every latent panel and every mean panel explains its colours with a colour bar
    bars = [axes for axes in figure.axes if axes.get_xlabel().startswith(('blue: less',
                                                                          'attention per token'))]
    assert len(bars) == 2 * (3 + 1)
    assert all([t.get_text() for t in bar.get_xticklabels()][1] == 'mean'
               for bar in bars if bar.get_xlabel().startswith('blue'))
    assignments = [axes for axes in figure.axes if axes.get_title().startswith('latent each')]
    assert all(any(text.get_text().isdigit() for text in axes.texts) for axes in assignments)
    rows = [axes.get_ylabel() for axes in figure.axes if axes.get_ylabel()]
    assert rows == ['layer 0\n(first)', 'layer 2\n(middle)']
    assert 'Red: the latent attends there more than the mean of all latents, blue: less' in \
        figure.get_supxlabel()
    legend = [text.get_text() for text in figure.axes[3].get_legend().get_texts()]
    assert legend == ['0 sky', '1 grass', '3 sand', 'not labelled']  # only the classes present
    width, height = figure.get_size_inches() * figure.dpi
    assert width >= 1200 and height >= 256  # the README promises 1200 px


def write(path: Path, array: np.ndarray, mode=None) -> str:
    Image.fromarray(array, mode).save(path)
    return str(path)


def test_label_maps_are_read_at_their_bit_depth_and_checked(tmp_path):
    ade = write(tmp_path / 'ade.png', np.array([[0, 1], [5, 255]], np.uint8))
    np.testing.assert_array_equal(read_label_map(ade, 5, reduce_zero_label=True),
                                  [[255, 0], [4, 255]])
    wide = write(tmp_path / 'wide.png', np.array([[1, 255, 256, 257]], np.uint16))
    with pytest.raises(InputFileError, match=r'wide.png: label values \[256, 257\] exceed'):
        read_label_map(wide, 5, reduce_zero_label=True)
    rgb = write(tmp_path / 'rgb.png', np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(InputFileError, match='rgb.png has 3 channels'):
        read_label_map(rgb, 5, reduce_zero_label=False)


def test_label_paths_from_a_folder_or_one_per_image(tmp_path):
    assert label_paths(['a/x.jpg', 'b/y.jpg'], [str(tmp_path)]) == [
        str(tmp_path / 'x.png'), str(tmp_path / 'y.png')]
    with pytest.raises(InputFileError, match='2 label maps for 3 images'):
        label_paths(['x', 'y', 'z'], ['x.png', 'y.png'])


def test_figure_paths_never_share_an_output(tmp_path):
    for folder in ('a', 'b', 'a/deep'):
        (tmp_path / folder).mkdir()
    images = [str(tmp_path / name) for name in ('a/x.jpg', 'b/x.jpg', 'a/y.jpg', 'a/y.png',
                                                'a/deep/z.jpg')]
    out = tmp_path / 'out'
    paths = figure_paths(images, out)
    assert [str(p.relative_to(out)) for p in paths.values()] == [
        'a/x_bixt.png', 'b/x_bixt.png', 'a/y.jpg_bixt.png', 'a/y.png_bixt.png',
        'a/deep/z_bixt.png']
    assert figure_paths([images[0]], out) == {images[0]: out / 'x_bixt.png'}
    pair = [str(tmp_path / 'a' / 'x.png'), str(tmp_path / 'a' / 'x_bixt.png')]
    with pytest.raises(InputFileError, match='x_bixt.png would overwrite the input'):
        figure_paths(pair, tmp_path / 'a')  # x.png's figure is the other input


def test_part_figure_fills_its_frames_and_reports_the_shape_iou():
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-1, 1, (300, 3)) * [1.0, 0.3, 0.5]
    truth = np.where(xyz[:, 0] > 0, 12, 13)
    prediction = truth.copy()
    prediction[:30] = 14
    figure = part_segmentation_figure(xyz, truth, prediction, (12, 13, 14, 15),
                                      {12: 'back', 13: 'seat'}, title='Chair')
    from mmbixt.evaluation import shape_iou
    assert figure.get_suptitle() == \
        f'Chair: shape IoU {100 * shape_iou(prediction, truth, (12, 13, 14, 15)):.1f}%'
    panels = [axes for axes in figure.axes if axes.collections]
    assert len(panels) == 4  # truth and prediction, two views
    assert panels[1].get_title().startswith('prediction (30 of 300 points wrong')
    for axes, view in zip(panels, (0, 0, 1, 1)):
        camera = project(xyz, *((-35.0, 10.0), (-35.0, 75.0))[view])
        span = np.ptp(camera[:, :2], axis=0)
        shown = np.array([np.diff(axes.get_xlim())[0], np.diff(axes.get_ylim())[0]])
        assert np.all(shown <= span + 0.1 * span.max())  # the view is the shape, little else
    legend = [t.get_text() for t in figure.axes[-1].get_legend().get_texts()]
    assert legend == ['12 back', '13 seat', '14', '15 (absent)']
    assert [panels[0].get_ylabel(), panels[2].get_ylabel()] == [
        'from the side\nyaw -35°, elevation 10°', 'from above\nyaw -35°, elevation 75°']


def test_recorder_maps_are_attention_distributions_also_under_autocast():
    from mmbixt.models.backbones import BiXTBackbone
    from mmbixt.operations.visualization import AttentionRecorder
    torch.manual_seed(0)
    backbone = BiXTBackbone(arch=dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=2,
                                      patch_size=16, stride=8), out_indices=(0, 1)).eval()
    recorder = AttentionRecorder(backbone, [0, 1])
    image = torch.randn(1, 3, 44, 60)  # 6 x 8 tokens at stride 8 (padded)
    with torch.no_grad():
        backbone(image)
    full = [recorder.maps(layer) for layer in (0, 1)]
    for to_tokens, to_latents in full:
        assert to_tokens.shape == to_latents.shape == (8, 6, 8)
        torch.testing.assert_close(to_tokens.sum((1, 2)), torch.ones(8))
        torch.testing.assert_close(to_latents.sum(0), torch.ones(6, 8))
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        backbone(image)
    for (to_tokens, to_latents), layer in zip(full, (0, 1)):
        half = recorder.maps(layer)
        assert all(m.dtype == torch.float32 for m in half)
        torch.testing.assert_close(half[0], to_tokens, atol=0.02, rtol=0.1)
    covered = recorder.over_image(1, covered=(5, 7))  # the image's tokens, not the padding
    torch.testing.assert_close(covered.token_to_latents, recorder.maps(1)[1][:, :5, :7])
    recorder.remove()


@pytest.mark.parametrize('grid, size', [((3, 4), (7, 13)), ((16, 17), (117, 119)),
                                        ((2, 2), (2, 2))])
def test_token_maps_reach_the_pixels_as_torch_nearest_does(grid, size):
    import torch.nn.functional as F
    from mmbixt.operations.visualization.segmentation import to_pixels
    tokens = torch.rand(grid)
    expected = F.interpolate(tokens[None, None], size=size, mode='nearest')[0, 0]
    np.testing.assert_array_equal(to_pixels(tokens.numpy(), size), expected.numpy())


def test_infer_gt_folder_follows_the_config_seg_map_suffix(tmp_path):
    import argparse

    from mmengine.config import Config

    from conftest import REPO, load_tool
    infer = load_tool('infer')
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / '0001.jpg')
    truth = np.arange(600, dtype=np.uint8).reshape(20, 30) % 3
    Image.fromarray(truth).save(tmp_path / '0001_mask.png')
    cfg = Config.fromfile(str(REPO / 'configs' / 'bixt' / 'my_data_upernet_bixt_cpu.py'))
    cfg.test_dataloader.dataset.seg_map_suffix = '_mask.png'
    args = argparse.Namespace(images=[str(tmp_path / '0001.jpg')], gt=[str(tmp_path)])
    (_, _, read), = infer.read_inputs(args, cfg)
    np.testing.assert_array_equal(read, truth)
