"""BiXT classifiers in timm: parity with the original implementation, every timm loading route,
and timm's feature-extraction conventions."""
from __future__ import annotations

import ast
import inspect
import json
import os
import zipfile
from pathlib import Path

import pytest
import timm
import timm.optim
import torch
from torch import nn
from conftest import (REFERENCE, REPO, VARIANTS, load_expected, reference_arch, released_layout_state,
                      write_released_checkpoint)

from mmbixt.archs import RELEASED_ARCHS, canonical_name
from mmbixt.checkpoint import CheckpointError
from mmbixt.models.classifiers import CLASSIFIER_NAMES, BiXTClassifier

POS = 'fourier_pos_encode.pos'


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize('variant', VARIANTS)
def test_reference_logits(reference_dir: Path, variant: str) -> None:
    expected = load_expected(variant)
    model = BiXTClassifier(reference_arch(expected['config']),
                           num_classes=expected['config']['num_classes']).eval()
    report = model.load_pretrained(str(reference_dir / variant / 'model_best.pth.tar'))
    assert report.dropped == [POS] and report.new == []
    assert len(model.core.blocks) == expected['config']['depth']
    with torch.no_grad():
        for split in ('train', 'dyn'):  # the training size, and 96x128 with the on-the-fly encoding
            logits = model(expected[f'{split}_input'])
            assert relative_error(logits, expected[f'{split}_logits']) < 1e-5, split
            latents = model.forward_features(expected[f'{split}_input'])
            assert torch.allclose(model.forward_head(latents), logits)
            assert model.forward_head(latents, pre_logits=True).shape == (latents.shape[0], 64)


def test_timm_api() -> None:
    model = timm.create_model('bixt_ti_l64_d13_p16', num_classes=10)
    assert len(model.core.blocks) == 13 and model.core.blocks[12].cross_attention_latents_token.one_sided
    assert model.num_features == 192 and model.num_classes == 10
    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3 and model.num_classes == 3
    model.reset_classifier(0)
    assert model(torch.zeros(1, 3, 32, 48)).shape == (1, 192)
    cfg = timm.create_model('bixt_ed256LS_l64_p16s8_ft384').pretrained_cfg
    assert cfg['input_size'] == (3, 384, 384) and cfg['crop_pct'] == 0.875
    assert cfg['interpolation'] == 'bicubic' and cfg['num_classes'] == 1000
    data = timm.data.resolve_data_config(model=timm.create_model('bixt_ti_l64_p16'))
    assert data['input_size'] == (3, 224, 224) and data['mean'] == timm.data.IMAGENET_DEFAULT_MEAN
    assert set(CLASSIFIER_NAMES) <= set(timm.list_models('bixt_*'))


def released_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Random tensors under exactly the keys and shapes of the released checkpoint ``name``."""
    canonical = canonical_name(name)
    if canonical in json.loads((REFERENCE / 'released_state_dict_shapes.json').read_text()):
        return released_layout_state(canonical)
    # No original constructor, so not in the list: the model's own keys, plus ``pos`` at 224px.
    own = BiXTClassifier(canonical).state_dict()
    generator = torch.Generator().manual_seed(0)
    state = {key.removeprefix('core.'): torch.randn(v.shape, generator=generator) if v.ndim else v + 5
             for key, v in own.items()}
    if RELEASED_ARCHS[canonical].img_size == 224:
        state[POS] = torch.randn(64, 14, 14, generator=generator)
    return state


def write_released_zip(folder: Path, name: str, state_dict: dict) -> Path:
    """A zip as downloaded (a folder holding ``model_best.pth.tar``), saved from a DDP model."""
    return write_released_checkpoint(folder / f'{name}.zip',
                                     {f'module.{k}': v for k, v in state_dict.items()}, name,
                                     zip_folder=name)


def unzip_checkpoint(archive: Path, folder: Path) -> Path:
    """The ``.pth.tar`` inside a released zip (what timm's own reader takes)."""
    with zipfile.ZipFile(archive) as zipped:
        return Path(zipped.extract(zipped.namelist()[0], folder))


# timm's documented routes to a checkpoint file, each given a model name and a path.
def via_pretrained_file(name: str, path: Path):
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def via_pretrained_file_timm_reader(name: str, path: Path):
    # custom_load=False: timm reads the file itself, then applies pretrained_filter_fn.
    return timm.create_model(name, pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(path), custom_load=False))


def via_checkpoint_path(name: str, path: Path):
    return timm.create_model(name, checkpoint_path=str(path))


def via_load_checkpoint(name: str, path: Path):
    model = timm.create_model(name)
    timm.models.load_checkpoint(model, str(path))
    return model


ZIP_ROUTES = [via_pretrained_file]  # the routes that read the zip as downloaded
PTH_ROUTES = [via_pretrained_file, via_pretrained_file_timm_reader, via_checkpoint_path,
              via_load_checkpoint]


@pytest.mark.parametrize('name', CLASSIFIER_NAMES)
def test_create_model_loads_released_zip(tmp_path: Path, name: str) -> None:
    state = released_state_dict(name)
    archive = write_released_zip(tmp_path, name, state)
    model = via_pretrained_file(name, archive)
    loaded = {key.removeprefix('core.'): value for key, value in model.state_dict().items()}
    assert set(loaded) == set(state) - {POS}  # every released tensor used, nothing left new
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


@pytest.fixture(scope='module')
def ti_p16s8_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    name = 'bixt_ti_l64_p16s8'
    return write_released_zip(tmp_path_factory.mktemp('zip'), name, released_state_dict(name))


@pytest.fixture(scope='module')
def ti_p16s8_pth(ti_p16s8_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unzip_checkpoint(ti_p16s8_zip, tmp_path_factory.mktemp('pth'))


@pytest.mark.parametrize('route', PTH_ROUTES)
def test_every_route_loads_the_released_pth_tar(ti_p16s8_pth: Path, route) -> None:
    model = route('bixt_ti_l64_p16s8', ti_p16s8_pth)
    state = released_state_dict('bixt_ti_l64_p16s8')
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key.removeprefix('core.')]), key


@pytest.mark.parametrize('other, problem', [
    ('bixt_ti_l64_p16', 'token stride 8'),          # same shapes, another stride: name or pos grid
    ('bixt_conv_ti_l64_p16', 'conv tokenizer'),
    ('bixt_ti_l64_d13_p16s8', 'depth 12'),
    ('bixt_ed256LS_l64_p16s8', 'width 192'),        # same variant, another width
])
@pytest.mark.parametrize('route', PTH_ROUTES)
def test_every_route_refuses_another_variant_or_size(ti_p16s8_zip: Path, ti_p16s8_pth: Path,
                                                     route, other: str, problem: str) -> None:
    for path in [ti_p16s8_pth] + ([ti_p16s8_zip] if route in ZIP_ROUTES else []):
        with pytest.raises(CheckpointError, match=problem):
            route(other, path)


def test_pretrained_filter_fn_remaps_a_state_dict(ti_p16s8_pth: Path) -> None:
    # timm's other pretrained sources (state_dict, url, hub) pass through the same filter.
    state = released_state_dict('bixt_ti_l64_p16s8')
    ddp = {f'module.{key}': value for key, value in state.items()}
    model = timm.create_model('bixt_ti_l64_p16s8', pretrained=True, num_classes=7,
                              pretrained_cfg_overlay=dict(state_dict=ddp))
    assert torch.equal(model.core.latents, state['latents']) and model.head.out_features == 7
    with pytest.raises(CheckpointError, match='state dict loaded into the BiXT.*token stride 8'):
        timm.create_model('bixt_ti_l64_p16', pretrained=True,
                          pretrained_cfg_overlay=dict(state_dict=dict(state)))


def test_load_state_dict_keeps_nn_module_semantics() -> None:
    model = timm.create_model('bixt_ti_l64_p16s8')
    other = timm.create_model('bixt_ti_l64_p16s8')
    result = model.load_state_dict(other.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.core.latents, other.core.latents)
    head_only = {'head.weight': torch.ones(1000, 192)}
    assert set(model.load_state_dict(head_only, strict=False).missing_keys) == set(
        model.state_dict()) - set(head_only)


def test_timm_reader_cannot_open_the_released_zip(ti_p16s8_zip: Path) -> None:
    """Pins why checkpoint_path= and timm.models.load_checkpoint take the .pth.tar inside the zip:
    timm opens the path with torch.load before any model code runs, and torch cannot read a plain
    zip. If this stops failing, timm or torch changed: check that those routes read the zip safely
    and run the checks, then document the zip for them in the README."""
    model = timm.create_model('bixt_ti_l64_p16s8')
    before = model.core.latents.clone()
    for route in (lambda: timm.models.load_checkpoint(model, str(ti_p16s8_zip)),
                  lambda: timm.create_model('bixt_ti_l64_p16s8', checkpoint_path=str(ti_p16s8_zip))):
        try:
            route()
        except RuntimeError as err:
            assert 'version' in str(err), err
        else:
            pytest.fail('timm now reads the released zip on its own: see this test\'s docstring')
    assert torch.equal(model.core.latents, before)


def test_timm_reads_files_with_weights_only() -> None:
    # The routes through timm's reader are safe only while it defaults to weights_only=True.
    for function in (timm.models.load_checkpoint, timm.models.load_state_dict):
        default = inspect.signature(function).parameters['weights_only'].default
        assert default is True, f'{function.__name__} now defaults to weights_only={default}'


@pytest.fixture(scope='module')
def exploit_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A .pth.tar and a zip whose unpickling would create ``marker``."""
    folder = tmp_path_factory.mktemp('evil')
    marker = folder / 'pwned'

    class Exploit:
        def __reduce__(self):
            return os.system, (f'touch {marker}',)

    state = {f'module.{k}': v for k, v in released_state_dict('bixt_ti_l64_p16s8').items()}
    pth = folder / 'model_best.pth.tar'
    torch.save({'state_dict': state, 'arch': 'bixt_ti_l64_p16s8', 'args': Exploit()}, pth)
    archive = folder / 'evil.zip'
    with zipfile.ZipFile(archive, 'w') as zipped:
        zipped.write(pth, 'evil/model_best.pth.tar')
    return pth, archive, marker


@pytest.mark.parametrize('route', PTH_ROUTES)
def test_every_route_refuses_a_pickle_that_would_run_code(exploit_files, route) -> None:
    pth, archive, marker = exploit_files
    for path in [pth] + ([archive] if route in ZIP_ROUTES else []):
        with pytest.raises((CheckpointError, RuntimeError), match='system|non-allowlisted'):
            route('bixt_ti_l64_p16s8', path)
    assert not marker.exists()


def test_new_head_for_other_classes(ti_p16s8_zip: Path) -> None:
    model = timm.create_model('bixt_ti_l64_p16s8', pretrained=True, num_classes=5,
                              pretrained_cfg_overlay=dict(file=str(ti_p16s8_zip)))
    assert model.head.out_features == 5
    assert torch.equal(model.fc_norm.weight, released_state_dict('bixt_ti_l64_p16s8')['fc_norm.weight'])


def test_pretrained_without_file_says_how() -> None:
    with pytest.raises(RuntimeError, match='pretrained_cfg_overlay=dict.file=PATH'):
        timm.create_model('bixt_ti_l64_p16', pretrained=True)


PRIVATE_OF = ('timm',)  # packages whose private names mmbixt must neither read nor rebind


def private_uses(path: Path) -> list[str]:
    """``import timm._x`` / ``from timm.y import _z`` / ``alias._attr`` on a timm import, in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    aliases, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module or '' if isinstance(node, ast.ImportFrom) else ''
            for alias in node.names:
                full = f'{module}.{alias.name}' if module else alias.name
                if not full.split('.')[0] in PRIVATE_OF:
                    continue
                if any(part.startswith('_') and not part.startswith('__')
                       for part in full.split('.')):
                    found.append(f'{path.name}:{node.lineno} imports {full}')
                aliases.add(alias.asname or alias.name.split('.')[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith('_') \
                and not node.attr.startswith('__'):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in aliases:
                found.append(f'{path.name}:{node.lineno} uses {root.id}...{node.attr}')
    return found


def mmbixt_functions_in(packages: tuple[str, ...]) -> list[str]:
    """Attributes of the loaded modules of ``packages`` that are functions written in mmbixt
    (found by their code's file: ``functools.wraps`` would hide a wrapper's ``__module__``)."""
    import sys
    package_dir = str(REPO / 'mmbixt')
    return [f'{module_name}.{attr}' for module_name, module in list(sys.modules.items())
            if module_name.split('.')[0] in packages
            for attr, value in list(vars(module).items())
            if str(getattr(getattr(value, '__code__', None), 'co_filename', '')).startswith(package_dir)]


def test_no_private_timm_attribute_is_read_or_rebound() -> None:
    sources = sorted((REPO / 'mmbixt').rglob('*.py')) + sorted((REPO / 'tools').glob('*.py'))
    found = [use for path in sources for use in private_uses(path)]
    assert not found, 'private timm names used (use a public hook): ' + '; '.join(found)
    import mmbixt  # noqa: F401  (registers the models: nothing of mmbixt may land in timm's modules)
    assert not mmbixt_functions_in(PRIVATE_OF), mmbixt_functions_in(PRIVATE_OF)


def test_private_use_checks_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / 'bad.py'
    bad.write_text('import timm.models._factory as f\nimport timm\ntimm.models._helpers.x = 1\n')
    assert len(private_uses(bad)) == 2
    from mmbixt.models.core import take_indices
    monkeypatch.setattr(timm.models, 'probe', take_indices, raising=False)
    assert mmbixt_functions_in(PRIVATE_OF) == ['timm.models.probe']


# ---------------------------------------------------------------- timm feature conventions
def test_features_only() -> None:
    model = timm.create_model('bixt_ti_l64_d13_p16', features_only=True).eval()
    assert model.feature_info.reduction() == [16] * 4
    assert model.feature_info.channels() == [192] * 4
    assert model.feature_info.module_name() == [f'core.blocks.{i}' for i in (3, 5, 7, 11)]
    assert len(model.model.core.blocks) == 12  # pruned after the last layer read
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(1, 192, 4, 6)] * 4
    small = timm.create_model('bixt_ti_l64_p16s8', features_only=True, out_indices=(-2, -1))
    assert small.feature_info.reduction() == [8, 8] and small.feature_info.module_name() == [
        'core.blocks.9', 'core.blocks.10']
    with torch.no_grad():
        assert [tuple(m.shape) for m in small(torch.randn(2, 3, 32, 40))] == [(2, 192, 4, 5)] * 2


def tiny_classifier(**kwargs) -> BiXTClassifier:
    arch = dict(embed_dims=32, num_heads=2, num_latents=4, num_layers=3, tokenizer='linear',
                patch_size=16, stride=8)
    return BiXTClassifier(arch, num_classes=10, **kwargs).eval()


def test_forward_intermediates() -> None:
    model = tiny_classifier()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x), atol=1e-6)
        assert torch.allclose(model.forward_head(final), model(x), atol=1e-6)
        assert [tuple(m.shape) for m in maps] == [(2, 32, 4, 6)] * 3
        tokens = model.forward_intermediates(x, indices=[-1, 0], output_fmt='NLC',
                                             intermediates_only=True)
        assert len(tokens) == 2 and tokens[0].shape == (2, 24, 32)  # in the order asked
        assert torch.allclose(tokens[0].transpose(1, 2).reshape(2, 32, 4, 6), maps[2])
        assert torch.allclose(tokens[1].transpose(1, 2).reshape(2, 32, 4, 6), maps[0])
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        assert torch.allclose(normed[0], model.fc_norm(tokens[0]).transpose(1, 2).reshape(2, 32, 4, 6))
        early, first = model.forward_intermediates(x, indices=[0], stop_early=True)
        assert torch.allclose(first[0], maps[0]) and not torch.allclose(early, final)
    with pytest.raises(ValueError, match='out of range'):
        model.forward_intermediates(x, indices=[3])
    with pytest.raises(ValueError, match='output_fmt'):
        model.forward_intermediates(x, output_fmt='NHWC')


def test_prune_intermediate_layers() -> None:
    model = tiny_classifier()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        _, before = model.forward_intermediates(x)
        assert model.prune_intermediate_layers([1]) == [1]
        after = model.forward_intermediates(x, indices=[1], intermediates_only=True)
    assert len(model.core.blocks) == 2 and isinstance(model.head, nn.Identity)
    assert isinstance(model.fc_norm, nn.LayerNorm)  # kept unless prune_norm
    assert torch.allclose(after[0], before[1])


def test_input_sides_not_multiple_of_stride_are_zero_padded() -> None:
    model = tiny_classifier()
    x = torch.randn(1, 3, 29, 43)
    padded = torch.zeros(1, 3, 32, 48)
    padded[..., :29, :43] = x
    with torch.no_grad():
        assert torch.allclose(model(x), model(padded), atol=1e-6)
        assert model.forward_intermediates(x, intermediates_only=True)[0].shape[-2:] == (4, 6)


def test_group_matcher_drives_timm_layer_decay() -> None:
    model = timm.create_model('bixt_ti_l64_d13_p16', num_classes=10)
    groups = timm.optim.param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.5,
                                                 no_weight_decay_list=model.no_weight_decay())
    scale_of = {id(p): g['lr_scale'] for g in groups for p in g['params']}
    decay_of = {id(p): g['weight_decay'] for g in groups for p in g['params']}
    params = dict(model.named_parameters())
    # Groups: embedding 0, layers 1..13 (fc_norm with the last, as timm's ViT puts its final
    # norm), head 14; scale 0.5 ** (14 - group).
    assert scale_of[id(params['patch_embed.proj.weight'])] == 0.5 ** 14
    assert scale_of[id(params['fourier_pos_encode.token_projection.weight'])] == 0.5 ** 14
    assert scale_of[id(params['core.latents'])] == 0.5 ** 14
    assert scale_of[id(params['core.blocks.0.self_attention_latents.attn.qkv.weight'])] == 0.5 ** 13
    assert scale_of[id(params['core.blocks.12.self_attention_latents.attn.qkv.weight'])] == 0.5
    assert scale_of[id(params['fc_norm.weight'])] == 0.5
    assert scale_of[id(params['head.weight'])] == 1.0
    assert decay_of[id(params['core.latents'])] == 0.0
    assert decay_of[id(params['core.blocks.0.self_attention_latents.attn.qkv.weight'])] == 0.05


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision(dtype: torch.dtype) -> None:
    model = tiny_classifier()
    nn.init.normal_(model.head.weight)  # a new head gives zero logits
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        reference = model(x)
        out = model.to(dtype)(x.to(dtype))
        maps = model.forward_intermediates(x.to(dtype), intermediates_only=True)
    assert out.dtype == dtype and all(m.dtype == dtype for m in maps)
    assert relative_error(out.float(), reference) < 0.05


def test_features_only_with_pretrained_weights(ti_p16s8_zip: Path) -> None:
    model = timm.create_model('bixt_ti_l64_p16s8', features_only=True, out_indices=(1,), pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(ti_p16s8_zip)))
    state = released_state_dict('bixt_ti_l64_p16s8')
    assert torch.equal(model.model.core.blocks[1].self_attention_latents.attn.qkv.weight,
                       state['blocks.1.self_attention_latents.attn.qkv.weight'])
    assert len(model.model.core.blocks) == 2 and isinstance(model.model.head, nn.Identity)


@pytest.mark.parametrize('indices, taken', [(None, [0, 1, 2]), (2, [1, 2]), ([-1, 2, 0], [2, 2, 0])])
def test_take_indices(indices, taken) -> None:
    from mmbixt.models.core import take_indices
    assert take_indices(3, indices) == taken
    with pytest.raises(ValueError):
        take_indices(3, [3] if indices is None else 4)
