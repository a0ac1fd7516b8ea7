"""``torch.export.export`` with dynamic sizes: the image backbone, the timm classifier, the image
segmentors' ``forward(mode='tensor')`` (height and width), the point backbone and the point
segmentor's logits (number of points). The exported program equals eager at three held-out sizes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.export import Dim

import mmbixt  # noqa: F401
from mmbixt.operations.deploy.onnx import exportable_copy, load_segmentor
from mmbixt.models.backbones import BiXTBackbone, PointBiXTBackbone
from mmbixt.models.classifiers import BiXTClassifier
from mmbixt.models.core.tracing import traced

from test_export_onnx import SMALL_VARIANTS, small_variant_options

CONFIGS = Path(__file__).resolve().parents[1] / 'configs' / 'bixt'
TOLERANCE = 1e-5
HELD_OUT_IMAGES = [(48, 80), (97, 33), (130, 64)]  # none is the example size; two not multiples
HELD_OUT_POINTS = [40, 101, 300]
IMAGE_DIMS = {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}
POINT_DIMS = {0: Dim.DYNAMIC, 1: Dim.DYNAMIC}


def small_arch(tokenizer: str = 'linear', stride: int = 16, layer_scale: bool = False) -> dict:
    return dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=3, tokenizer=tokenizer,
                patch_size=16 if tokenizer == 'linear' else stride, stride=stride,
                layer_scale=layer_scale)


def flat_tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out if item is not None for t in flat_tensors(item)]


def assert_program_equals_eager(model, example: tuple, dynamic_shapes, inputs: list[tuple],
                                **kwargs) -> None:
    """Exports ``model`` once at ``example`` and checks the program on every held-out input."""
    program = torch.export.export(model, example, kwargs=kwargs or None,
                                  dynamic_shapes=dynamic_shapes)
    exported = program.module()
    for args in inputs:
        with torch.no_grad():
            expected = flat_tensors(model(*args, **kwargs))
            got = flat_tensors(exported(*args, **kwargs))
        assert len(got) == len(expected)
        for ours, ref in zip(got, expected):
            assert ours.shape == ref.shape
            error = ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
            assert error <= TOLERANCE, f'{[tuple(a.shape) for a in args]}: {error:.2e}'


def images(sizes, batch: int = 2) -> list[tuple]:
    return [(torch.randn(batch, 3, *size),) for size in sizes]


@pytest.mark.parametrize('tokenizer,stride,layer_scale', [
    ('linear', 16, False), pytest.param('conv', 8, True, marks=pytest.mark.slow)])
def test_backbone_exports_with_dynamic_height_and_width(tokenizer, stride, layer_scale):
    """Chunk sizes below the example's token count: symbolic sizes never chunk (the loop would
    pin the graph to the example), so one program still serves every size."""
    torch.manual_seed(0)
    model = BiXTBackbone(arch=small_arch(tokenizer, stride, layer_scale), out_indices=(0, 2),
                         with_latents=True,
                         execution=dict(train_chunk_size=5, stream_chunk_size=5)).eval()
    assert_program_equals_eager(model, (torch.randn(2, 3, 64, 96),), {'img': IMAGE_DIMS},
                                images(HELD_OUT_IMAGES, batch=3))


def test_classifier_exports_with_dynamic_height_and_width():
    torch.manual_seed(0)
    model = BiXTClassifier(arch=small_arch(), num_classes=10).eval()
    torch.nn.init.normal_(model.head.weight)
    assert_program_equals_eager(model, (torch.randn(2, 3, 64, 64),), {'x': IMAGE_DIMS},
                                images(HELD_OUT_IMAGES))


@pytest.mark.parametrize('variant', [
    'upernet-linear-4', pytest.param('fpn-conv-8', marks=pytest.mark.slow)])
def test_segmentor_tensor_mode_exports_with_dynamic_height_and_width(variant):
    """mmseg's ``Upsample`` computes sizes with ``int()``: ``exportable_copy`` swaps it for the
    traceable stand-in, as for ONNX."""
    config, tokenizer, stride = SMALL_VARIANTS[variant]
    torch.manual_seed(0)
    model = load_segmentor(CONFIGS / config,
                           cfg_options=small_variant_options(config, tokenizer, stride)).model
    assert_program_equals_eager(exportable_copy(model), (torch.randn(2, 3, 64, 64),),
                                (IMAGE_DIMS, None), images(HELD_OUT_IMAGES), mode='tensor')


@pytest.mark.parametrize('tokenizer', [
    pytest.param(dict(type='per_point', hidden_dims=16), marks=pytest.mark.slow),
    dict(type='grouped', num_groups=16, group_size=8, hidden_dims=16)])
def test_point_backbone_exports_with_a_dynamic_number_of_points(tokenizer):
    torch.manual_seed(0)
    model = PointBiXTBackbone(arch=small_arch(), in_channels=6, tokenizer=tokenizer,
                              out_indices=(0, 2), with_latents=True).eval()
    assert_program_equals_eager(model, (torch.randn(2, 64, 6),), {'points': POINT_DIMS},
                                [(torch.randn(3, n, 6),) for n in HELD_OUT_POINTS])


@pytest.mark.slow
def test_point_segmentor_logits_export_with_a_dynamic_number_of_points():
    """What the point segmentor's ``forward(mode='tensor')`` computes, from points and categories
    (its data samples only carry the category)."""
    torch.manual_seed(0)
    model = load_segmentor(CONFIGS / 'demo_partseg_bixt.py').model

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.segmentor = model

        def forward(self, points, categories):
            return self.segmentor.logits(points, categories)

    categories = torch.tensor([1, 4])
    assert_program_equals_eager(Logits().eval(), (torch.randn(2, 256, 6), categories),
                                (POINT_DIMS, {0: Dim.DYNAMIC}),
                                [(torch.randn(2, n, 6), categories) for n in (200, 333, 512)])


def test_one_predicate_tells_eager_runs_from_every_kind_of_capture():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(traced(x, x.shape[0]))
            return x + 1

    Probe()(torch.zeros(2, 3))
    torch.export.export(Probe(), (torch.zeros(2, 3),), dynamic_shapes={'x': {0: Dim.DYNAMIC}})
    torch.jit.trace(Probe(), torch.zeros(2, 3), check_trace=False)
    torch.fx.symbolic_trace(Probe())
    assert seen == [False, True, True, True]
