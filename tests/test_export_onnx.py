"""ONNX export (mmbixt/operations/deploy/onnx.py, tools/export_onnx.py): the graphs in ONNX Runtime against
the models' own ``test_step`` in PyTorch, the exportable stand-ins against what they replace, and
the refusals."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from mmbixt.checkpoint import CheckpointError
from mmbixt.operations.deploy.onnx import (TOLERANCE, AdaptiveAvgPool2dForExport, ExportError,
                                ImageSegmentorGraph, UpsampleForExport, export_graph,
                                export_segmentor, image_test_step, load_segmentor,
                                ort_inference_session, ort_session, point_test_step,
                                random_points, relative_difference, run_session, verify_export)
from mmbixt.models.necks.feature_pyramid import CeilMaxPool2d

REPO = Path(__file__).resolve().parents[1]
IMAGE_CONFIG = REPO / 'configs' / 'bixt' / 'demo_upernet_bixt_ti.py'  # token stride 8
POINT_CONFIG = REPO / 'configs' / 'bixt' / 'demo_partseg_bixt.py'
EXPORT_SHAPE = (64, 48)
NUM_POINTS = 256


def randomise_norm_statistics(model: nn.Module, seed: int = 0) -> None:
    """Random BatchNorm statistics, so a graph that dropped or mixed them up differs."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)


def save_random_checkpoint(config: Path, path: Path) -> Path:
    torch.manual_seed(0)
    model = load_segmentor(config).model
    randomise_norm_statistics(model)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def export_random(tmp_path_factory, config, name: str, **export_args):
    """A random-weight checkpoint of ``config``, the loaded segmentor and its ONNX file."""
    tmp = tmp_path_factory.mktemp(f'onnx_{name}')
    checkpoint = save_random_checkpoint(config, tmp / f'{name}.pth')
    loaded = load_segmentor(config, checkpoint)
    return loaded, export_segmentor(loaded, tmp / f'{name}.onnx', **export_args), checkpoint


@pytest.fixture(scope='module')
def image_export(tmp_path_factory):
    return export_random(tmp_path_factory, IMAGE_CONFIG, 'demo_upernet', shape=EXPORT_SHAPE)


@pytest.fixture(scope='module')
def point_export(tmp_path_factory):
    return export_random(tmp_path_factory, POINT_CONFIG, 'demo_partseg', num_points=NUM_POINTS)


def export_tool():
    spec = importlib.util.spec_from_file_location('export_onnx', REPO / 'tools' / 'export_onnx.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- image segmentor
@pytest.mark.parametrize('size', [(40, 56), (45, 71)])  # a multiple of the stride 8, and not
def test_image_graph_in_ort_equals_test_step(image_export, size):
    loaded, path, _ = image_export
    session = ort_inference_session(path)
    img = torch.rand(3, *size, generator=torch.Generator().manual_seed(sum(size))) * 255
    ref_logits, ref_classes = image_test_step(loaded.model, img)
    logits, classes = run_session(session, img[None])
    assert logits.shape == (1, 5) + size and classes.shape == (1,) + size
    assert relative_difference(logits[0], ref_logits) < TOLERANCE
    assert (classes[0] == ref_classes.numpy()).all()


def test_image_graph_takes_a_batch(image_export):
    loaded, path, _ = image_export
    imgs = torch.rand(2, 3, 37, 52, generator=torch.Generator().manual_seed(1)) * 255
    logits, _ = run_session(ort_inference_session(path), imgs)
    for logit, img in zip(logits, imgs):
        assert relative_difference(logit, image_test_step(loaded.model, img)[0]) < TOLERANCE


def test_image_graph_does_the_preprocessing(image_export):
    """The graph takes BGR 0..255: feeding it RGB changes the result (so the swap is in it)."""
    loaded, path, _ = image_export
    img = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(2)) * 255
    logits, _ = run_session(ort_inference_session(path), img.flip(0)[None])
    assert relative_difference(logits[0], image_test_step(loaded.model, img)[0]) > 1e-2


@pytest.mark.parametrize('exporter', [
    'torchscript', pytest.param('dynamo', marks=pytest.mark.slow)])
def test_export_tool_verify_passes(image_export, tmp_path, capsys, exporter):
    _, _, checkpoint = image_export
    out = tmp_path / 'm.onnx'
    flags = ['--dynamo'] if exporter == 'dynamo' else []
    code = export_tool().main([str(IMAGE_CONFIG), str(checkpoint), '--out', str(out),
                               '--shape', '64', '48', '--verify'] + flags)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f'({exporter} exporter, opset' in printed
    assert out.is_file() and 'PASS: largest relative difference' in printed
    assert 'ORT/PyTorch time' in printed and printed.count('labels differ') == 3


SMALL_VARIANTS = {  # (config, tokenizer, stride): both heads, both tokenisers, every stride
    'fpn-linear-16': ('fpn_bixt_ti_ade20k.py', 'linear', 16),
    'fpn-conv-8': ('fpn_bixt_conv_ti_p8_ade20k.py', 'conv', 8),
    'upernet-linear-4': ('upernet_bixt_ti_s4_ade20k.py', 'linear', 4),
}


def small_variant_options(config: str, tokenizer: str, stride: int) -> dict:
    """The config's model shrunk (width 32, 4 layers, narrow heads) for a fast export test."""
    width = 32
    options = {
        'model.backbone.arch': dict(
            _delete_=True, embed_dims=width, num_heads=2, num_latents=8, num_layers=4,
            tokenizer=tokenizer, patch_size=16 if tokenizer == 'linear' else stride,
            stride=stride),
        'model.backbone.out_indices': (0, 1, 2, 3),
        'model.neck.in_channels': width,
        'model.decode_head.channels': 16,
    }
    if config.startswith('fpn'):
        options.update({'model.neck.fpn.in_channels': [width] * 4,
                        'model.neck.fpn.out_channels': width,
                        'model.decode_head.in_channels': [width] * 4})
    else:
        options.update({'model.decode_head.in_channels': [width] * 4,
                        'model.auxiliary_head.in_channels': width,
                        'model.auxiliary_head.channels': 8})
    return options


@pytest.mark.parametrize('variant', sorted(SMALL_VARIANTS))
def test_every_head_tokeniser_and_stride_exports(variant, tmp_path):
    config, tokenizer, stride = SMALL_VARIANTS[variant]
    torch.manual_seed(0)
    loaded = load_segmentor(REPO / 'configs' / 'bixt' / config,
                            cfg_options=small_variant_options(config, tokenizer, stride))
    assert loaded.model.backbone.stride == stride
    randomise_norm_statistics(loaded.model)
    path = export_segmentor(loaded, tmp_path / 'm.onnx', shape=(64, 64))
    checks = verify_export(loaded, path, repeats=1, sizes=[(37, 83), (96, 48)])
    for check in checks:
        assert check.max_rel_diff < TOLERANCE, check


# ---------------------------------------------------------------- point segmentor
def test_point_graph_in_ort_equals_test_step(point_export):
    loaded, path, _ = point_export
    checks = verify_export(loaded, path, num_points=NUM_POINTS, repeats=1)
    # The traced size, another size, and a padded batch of a larger and a smaller cloud.
    assert [check.size for check in checks] == [(1, 256, 6), (1, 197, 6), (2, 293, 6)]
    assert checks[-1].labels_total == 293 + 131
    for check in checks:
        assert check.max_rel_diff < TOLERANCE and check.labels_differ == 0


def test_point_graph_takes_a_batch_of_categories(point_export):
    loaded, path, _ = point_export
    points = random_points(2, NUM_POINTS, loaded.point_channels, seed=5)
    categories = torch.tensor([3, 0])
    mask = torch.ones(2, NUM_POINTS, dtype=torch.bool)
    logits, parts = run_session(ort_inference_session(path), points, mask, categories)
    for i in range(2):
        ref_logits, ref_parts = point_test_step(loaded.model, points[i], int(categories[i]))
        assert relative_difference(logits[i], ref_logits) < TOLERANCE
        assert (parts[i] == ref_parts.numpy()).all()


@pytest.mark.slow
def test_dynamo_point_graph_takes_any_number_of_points(point_export, tmp_path):
    loaded, _, _ = point_export
    path = export_segmentor(loaded, tmp_path / 'p.onnx', num_points=NUM_POINTS, exporter='dynamo')
    for num_points in (NUM_POINTS // 2 + 3, NUM_POINTS + 77):
        checks = verify_export(loaded, path, num_points=num_points, repeats=1)
        assert checks[0].labels_total == num_points  # then another size and a padded batch
        for check in checks:
            assert check.max_rel_diff < TOLERANCE and check.labels_differ == 0


def test_dynamo_exporter_needs_onnxscript(image_export, tmp_path, monkeypatch):
    loaded, _, _ = image_export
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'onnxscript' else real_find_spec(name, *a))
    with pytest.raises(ExportError, match='needs onnxscript.*requirements/runtime.txt'):
        export_segmentor(loaded, tmp_path / 'm.onnx', exporter='dynamo')


def test_per_point_graph_masks_the_padding_tokens(tmp_path):
    """Per-point tokens of padding are invalid tokens inside the exported core too."""
    options = {'model.backbone.tokenizer': dict(_delete_=True, type='per_point', hidden_dims=32)}
    loaded = load_segmentor(POINT_CONFIG, cfg_options=options)  # random weights
    path = export_segmentor(loaded, tmp_path / 'per_point.onnx', num_points=64)
    checks = verify_export(loaded, path, num_points=64, repeats=1)
    assert checks[-1].size == (2, 101, 6)  # 101 and 35 points, padded and masked
    for check in checks:
        assert check.max_rel_diff < TOLERANCE and check.labels_differ == 0


# ---------------------------------------------------------------- the stand-ins
@pytest.mark.parametrize('kernel', [2, 4, 8])
def test_neck_pooling_equals_ceil_mode_max_pool(kernel):
    pool = nn.MaxPool2d(kernel, kernel, ceil_mode=True)
    for height, width in [(5, 7), (8, 8), (9, 17), (3, 1)]:
        x = torch.randn(2, 3, height, width)
        assert torch.equal(CeilMaxPool2d(kernel)(x), pool(x))


@pytest.mark.parametrize('bins', [1, 2, 3, 6, (2, 5)])
def test_adaptive_pool_stand_in_equals_adaptive_avg_pool(bins):
    for height, width in [(5, 7), (6, 6), (13, 9), (2, 11)]:
        x = torch.randn(2, 4, height, width)
        torch.testing.assert_close(AdaptiveAvgPool2dForExport(bins)(x),
                                   nn.AdaptiveAvgPool2d(bins)(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('factor,mode', [(2, 'bilinear'), (1.5, 'nearest')])
def test_upsample_stand_in_equals_mmseg_upsample(factor, mode):
    from mmseg.models.utils import Upsample
    upsample = Upsample(scale_factor=factor, mode=mode, align_corners=False if mode != 'nearest'
                        else None)
    for size in [(5, 7), (8, 3)]:
        x = torch.randn(1, 2, *size)
        assert torch.equal(UpsampleForExport(upsample)(x), upsample(x))


def test_ort_session_for_the_benchmark_is_dynamic(image_export):
    """The backbone and the segmentor in ``mode='tensor'``, traced at one size, run at another."""
    loaded = load_segmentor(IMAGE_CONFIG)  # no checkpoint: its random weights
    model = loaded.model
    x = torch.randn(1, 3, 45, 30)
    with torch.no_grad():
        expected = [model.backbone(x), [model(x, mode='tensor')]]
    for module, reference in zip((model.backbone, model), expected):
        outputs = ort_session(module, (64, 64), threads=1)(x)
        assert len(outputs) == len(reference)
        for ours, ref in zip(outputs, reference):
            assert relative_difference(ours, ref) < TOLERANCE
    graph = ImageSegmentorGraph(model, loaded.preprocessing)
    logits, _ = ort_session(graph, (64, 64), threads=1)(x.abs() * 50)
    assert relative_difference(logits[0], image_test_step(model, x[0].abs() * 50)[0]) < TOLERANCE


# ---------------------------------------------------------------- refusals
def test_checkpoint_of_another_model_is_refused_by_name(point_export, capsys, tmp_path):
    _, _, point_checkpoint = point_export
    # The same whole-model policy as tools/test.py (mmbixt.checkpoint.model_match).
    refusal = (rf'{point_checkpoint.name}: does not match the model: .*lacks \d+ tensors the '
               r'model needs: .*backbone')
    with pytest.raises(CheckpointError, match=refusal):
        load_segmentor(IMAGE_CONFIG, point_checkpoint)
    code = export_tool().main([str(IMAGE_CONFIG), str(point_checkpoint),
                               '--out', str(tmp_path / 'x.onnx')])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f'error: {point_checkpoint}: ')
    assert "Point at a checkpoint of this config's model" in err[-1]
    assert not (tmp_path / 'x.onnx').exists()


def test_config_that_is_not_a_segmentor_is_refused(tmp_path):
    dataset_config = REPO / 'configs' / '_base_' / 'datasets' / 'ade20k.py'
    with pytest.raises(ExportError,
                       match=r'ade20k.py: not a segmentor config \(it defines no model'):
        load_segmentor(dataset_config)
    backbone_config = tmp_path / 'backbone.py'
    backbone_config.write_text("custom_imports = dict(imports=['mmbixt'])\n"
                               "model = dict(type='BiXTBackbone', arch='bixt_ti_l64_d13_p16')\n")
    with pytest.raises(ExportError, match=r'backbone.py: model BiXTBackbone is not a segmentor'):
        load_segmentor(backbone_config)


@pytest.mark.parametrize('options,message', [
    ({'model.test_cfg': dict(mode='slide', crop_size=(64, 64), stride=(32, 32))},
     r"test_cfg.mode='slide'; only 'whole'"),
    ({'model.data_preprocessor.test_cfg': dict(size_divisor=32)},
     r'data_preprocessor.test_cfg pads test images'),
])
def test_test_paths_the_graph_does_not_reproduce_are_refused(options, message):
    with pytest.raises(ExportError, match=rf'demo_upernet_bixt_ti.py: {message}'):
        load_segmentor(IMAGE_CONFIG, cfg_options=options)


def test_an_operator_onnx_lacks_is_named(tmp_path, capfd):
    from mmbixt.operations.deploy.onnx import GraphSpec

    class Eigen(nn.Module):
        def forward(self, x):
            return torch.linalg.eigh(x @ x.transpose(-1, -2))[0]

    spec = GraphSpec(Eigen(), (torch.randn(1, 4, 4),), ['x'], ['y'], {'x': {0: 'b'}})
    with pytest.raises(ExportError, match=r"Eigen cannot be exported to ONNX \(opset 18\): "
                                          r".*'aten::linalg_eigh'"):
        export_graph(spec, tmp_path / 'eigh.onnx', source='Eigen')
    assert 'graph' not in capfd.readouterr().out  # the exporter's graph dump is kept out
