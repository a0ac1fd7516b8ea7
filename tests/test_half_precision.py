"""Every BiXT backbone runs after ``.half()`` / ``.to(torch.bfloat16)``: outputs in that dtype, close
to fp32 (issue 10.3). The classifiers' half-precision test lives in tests/test_classifiers.py."""
from __future__ import annotations

import pytest
import torch

from mmbixt.models.backbones import BiXTBackbone
from mmbixt.models.backbones.bixt_point import PointBiXTBackbone

HALF_DTYPES = [torch.bfloat16, torch.float16]
# bf16 keeps 8 significant bits, fp16 11: a few layers of rounding stay within these.
TOLERANCE = {torch.bfloat16: 5e-2, torch.float16: 1e-2}


def tiny_arch(tokenizer: str) -> dict:
    return dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=3, tokenizer=tokenizer,
                patch_size=16, stride=16 if tokenizer == 'conv' else 8, layer_scale=False)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected).abs().max() / expected.abs().max()).item()


def scaled_down(model: torch.nn.Module) -> torch.nn.Module:
    """Moderate random weights: the test is about rounding, not about amplifying it."""
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim > 1:
                param.mul_(0.5)
    return model.eval()


@pytest.mark.parametrize('dtype', HALF_DTYPES)
@pytest.mark.parametrize('tokenizer', ['linear', 'conv'])
def test_image_backbone_runs_in_half_precision(tokenizer, dtype):
    torch.manual_seed(0)
    model = scaled_down(BiXTBackbone(arch=tiny_arch(tokenizer), out_indices=(0, 2)))
    image = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = model(image)
        model.to(dtype)
        from_fp32_input = model(image)  # mmseg's data preprocessor hands over fp32 images
        from_half_input = model(image.to(dtype))
    for actual in (from_fp32_input, from_half_input):
        for out, ref in zip(actual, expected):
            assert out.dtype == dtype and out.shape == ref.shape
            assert relative_error(out, ref) < TOLERANCE[dtype]


@pytest.mark.parametrize('dtype', HALF_DTYPES)
@pytest.mark.parametrize('tokenizer', [dict(type='per_point'),
                                       dict(type='grouped', num_groups=16, group_size=8)])
def test_point_backbone_runs_in_half_precision(tokenizer, dtype):
    torch.manual_seed(0)
    model = scaled_down(PointBiXTBackbone(
        arch=dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=3), out_indices=(1, 2),
        tokenizer=tokenizer, with_latents=True))
    points = torch.randn(2, 64, 6)
    with torch.no_grad():
        expected = model(points)
        actual = model.to(dtype)(points)
        model(points.to(dtype))  # half-precision points run too (their rounding moves the groups)
    for out, ref in zip(actual.feats + (actual.latents,), expected.feats + (expected.latents,)):
        assert out.dtype == dtype
        assert relative_error(out, ref) < TOLERANCE[dtype]
    # Sampling and grouping ran in fp32: the same centres as the fp32 model.
    assert torch.equal(actual.xyz.float(), expected.xyz)


def test_fourier_encoding_follows_the_projection_dtype():
    from mmbixt.models.core import FourierPositionalEncoding2d
    encode = FourierPositionalEncoding2d(16)
    expected = encode(5, 7)
    actual = encode.to(torch.bfloat16)(5, 7)
    assert actual.dtype == torch.bfloat16 and actual.shape == (1, 35, 16)
    assert relative_error(actual, expected) < 2e-2
