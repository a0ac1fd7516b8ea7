"""The conventions timm's own model suite checks, on every registered ``bixt_*`` model: TorchScript
(``torch.jit.script`` runs and matches eager), FX feature extraction (``create_feature_extractor``
returns the layers asked for; an FX-traced model's forward and backward match eager), complete
default cfgs, and ``torch.export`` with dynamic height and width.

The fast suite runs the graph checks on small models of the same classes (both tokenizers,
LayerScale, strides 16 and 8) and the cfg check on every registered name; the graph checks of every
registered name are ``slow``. Inputs are tiny: these are graph checks."""
from __future__ import annotations

import pytest
import timm
import torch
from timm.models import create_feature_extractor
from torch.export import Dim

import mmbixt  # noqa: F401  (registers the bixt_* models)
from mmbixt.models.classifiers import CLASSIFIER_NAMES, BiXTClassifier

SMALL = {  # the classes of the registered models, small
    'small_linear_p16': dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=3),
    'small_conv_p8_ls': dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=3,
                             tokenizer='conv', patch_size=8, stride=8, layer_scale=True),
}
EVERY_MODEL = list(SMALL) + [pytest.param(name, marks=pytest.mark.slow)
                             for name in CLASSIFIER_NAMES]
SIZE = (48, 64)  # small, not square, a multiple of neither 32 nor 48 per side
TOLERANCE = 1e-5
CFG_FIELDS = ('input_size', 'num_classes', 'crop_pct', 'interpolation', 'mean', 'std',
              'first_conv', 'classifier', 'fixed_input_size', 'license', 'origin_url',
              'paper_ids')


def create(name: str) -> torch.nn.Module:
    """A registered model (or one of ``SMALL``) with a random head (a new timm head starts at
    zero: its logits would all match)."""
    torch.manual_seed(0)
    model = (BiXTClassifier(SMALL[name], num_classes=5) if name in SMALL
             else timm.create_model(name, num_classes=5))
    torch.nn.init.normal_(model.head.weight, std=0.05)
    return model


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def images(batch: int = 2, size=SIZE) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize('name', EVERY_MODEL)
def test_torchscript_runs_and_matches_eager(name):
    with timm.set_scriptable(True):
        model = create(name).eval()
    scripted = torch.jit.script(model)
    for size in (SIZE, (37, 29)):
        x = images(size=size)
        with torch.no_grad():
            assert relative_error(scripted(x), model(x)) < TOLERANCE


@pytest.mark.parametrize('name', EVERY_MODEL)
def test_fx_feature_extractor_returns_the_layers_asked_for(name):
    model = create(name).eval()
    asked = {'core.blocks.1.self_attention_latents': 'latents1', 'fc_norm': 'pooled',
             'head': 'logits'}
    captured = {}
    for module_name, key in asked.items():
        model.get_submodule(module_name).register_forward_hook(
            lambda _, __, out, key=key: captured.__setitem__(key, out))
    extractor = create_feature_extractor(model, return_nodes=asked)
    x = images()
    with torch.no_grad():
        features = extractor(x)
        model(x)
    assert set(features) == set(asked.values())
    for key, value in features.items():
        assert relative_error(value, captured[key]) < TOLERANCE, key


@pytest.mark.parametrize('name', EVERY_MODEL)
def test_fx_traced_forward_and_backward_match_eager(name):
    model = create(name).train()  # no dropout or drop path by default: train mode is exact
    traced = create_feature_extractor(model, return_nodes={'head': 'logits'})
    x = images()
    grads = []
    outputs = []
    for module, run in ((model, model), (traced, lambda t: traced(t)['logits'])):
        module.zero_grad()
        out = run(x)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in module.named_parameters()
                      if p.grad is not None})
    assert relative_error(outputs[1], outputs[0]) < TOLERANCE
    assert grads[0] and set(grads[1]) == set(grads[0])
    for param_name, grad in grads[0].items():
        assert relative_error(grads[1][param_name], grad) < 1e-4, param_name


@pytest.mark.parametrize('name', CLASSIFIER_NAMES)
def test_default_cfg_is_complete(name):
    model = timm.create_model(name)
    cfg = model.pretrained_cfg
    assert not [f for f in CFG_FIELDS if cfg.get(f) is None], name
    state = model.state_dict()
    assert cfg['first_conv'] + '.weight' in state
    assert cfg['classifier'] + '.weight' in state
    assert state[cfg['classifier'] + '.weight'].shape[0] == cfg['num_classes']
    assert cfg['input_size'][0] == 3 and len(cfg['mean']) == len(cfg['std']) == 3


@pytest.mark.parametrize('name', EVERY_MODEL)
def test_pooled_features_and_a_head_that_goes_away(name):
    """The conventions of timm's non-standard models."""
    model = create(name).eval()
    with torch.no_grad():
        assert model.forward_head(model.forward_features(images()), pre_logits=True).shape == (
            2, model.num_features)
        model.reset_classifier(0)
        assert model(images()).shape == (2, model.num_features)


@pytest.mark.slow
@pytest.mark.parametrize('name', CLASSIFIER_NAMES)
def test_torch_export_with_dynamic_height_and_width(name):
    model = create(name).eval()
    program = torch.export.export(model, (images(),),
                                  dynamic_shapes={'x': {2: Dim.DYNAMIC, 3: Dim.DYNAMIC}})
    for size in ((37, 29), (64, 96), (80, 48)):
        x = images(size=size)
        with torch.no_grad():
            assert relative_error(program.module()(x), model(x)) < TOLERANCE
