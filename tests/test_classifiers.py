"""BiXT classifiers in timm: parity with the original implementation, and loading released zips."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import timm
import torch
from conftest import (REFERENCE, VARIANTS, load_expected, reference_arch, released_layout_state,
                      write_released_checkpoint)

from mmbixt.archs import ARCH_ALIASES, RELEASED_ARCHS, canonical_name
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


@pytest.mark.parametrize('name', CLASSIFIER_NAMES)
def test_create_model_loads_released_zip(tmp_path: Path, name: str) -> None:
    state = released_state_dict(name)
    archive = write_released_zip(tmp_path, name, state)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(archive)))
    loaded = {key.removeprefix('core.'): value for key, value in model.state_dict().items()}
    assert set(loaded) == set(state) - {POS}  # every released tensor used, nothing left new
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key
    if name in ARCH_ALIASES or name == 'bixt_ti_l64_d13_p16s8_ft384':
        again = timm.create_model(name, checkpoint_path=str(archive))
        assert torch.equal(again.head.weight, state['head.weight'])


@pytest.fixture(scope='module')
def ti_p16s8_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    name = 'bixt_ti_l64_p16s8'
    return write_released_zip(tmp_path_factory.mktemp('zip'), name, released_state_dict(name))


@pytest.mark.parametrize('other, problem', [
    ('bixt_ti_l64_p16', 'token stride 8'),          # same shapes, another stride: told by the name
    ('bixt_conv_ti_l64_p16', 'conv tokenizer'),
    ('bixt_ti_l64_d13_p16s8', 'depth 12'),
    ('bixt_ed256LS_l64_p16s8', 'shape'),            # same variant, another width
])
def test_refuses_other_variant_or_size(ti_p16s8_zip: Path, other: str, problem: str) -> None:
    with pytest.raises(CheckpointError, match=problem):
        timm.create_model(other, checkpoint_path=str(ti_p16s8_zip))
    with pytest.raises(CheckpointError, match=problem):
        timm.create_model(other, pretrained=True, pretrained_cfg_overlay=dict(file=str(ti_p16s8_zip)))


def test_new_head_for_other_classes(ti_p16s8_zip: Path) -> None:
    model = timm.create_model('bixt_ti_l64_p16s8', pretrained=True, num_classes=5,
                              pretrained_cfg_overlay=dict(file=str(ti_p16s8_zip)))
    assert model.head.out_features == 5
    assert torch.equal(model.fc_norm.weight, released_state_dict('bixt_ti_l64_p16s8')['fc_norm.weight'])


def test_pretrained_without_file_says_how() -> None:
    with pytest.raises(RuntimeError, match='pretrained_cfg_overlay=dict.file=PATH'):
        timm.create_model('bixt_ti_l64_p16', pretrained=True)


def test_timm_load_checkpoint_takes_the_unzipped_file(ti_p16s8_zip: Path, tmp_path: Path) -> None:
    # timm's own loader (validate.py --checkpoint) reads the .pth.tar; the released key layout and
    # the ``pos`` buffer are mapped by the model's state-dict pre-hook.
    with zipfile.ZipFile(ti_p16s8_zip) as archive:
        pth = archive.extract('bixt_ti_l64_p16s8/model_best.pth.tar', tmp_path)
    model = timm.create_model('bixt_ti_l64_p16s8')
    timm.models.load_checkpoint(model, pth, use_ema=False)
    assert torch.equal(model.core.latents, released_state_dict('bixt_ti_l64_p16s8')['latents'])
