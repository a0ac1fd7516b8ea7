"""Configs state the backbone; the neck, heads and layer decay follow it, and settings that
disagree are refused at build time naming both (issue 12.5 / 13.4)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmbixt  # noqa: F401  (registers)
from mmbixt.operations.engine.consistency import check_classes
from mmbixt.operations.engine.layer_decay import bixt_layer_id
from mmseg.registry import DATASETS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS

REPO = Path(__file__).resolve().parents[1]
ADE_CONFIGS = sorted((REPO / 'configs' / 'bixt').glob('*_ade20k.py'))
TINY = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=3, tokenizer='linear',
            patch_size=16, stride=8)

init_default_scope('mmseg')


def model_cfg(name: str = 'upernet_bixt_ti_ade20k.py', arch=TINY) -> Config:
    cfg = Config.fromfile(REPO / 'configs' / 'bixt' / name)
    cfg.model.backbone.arch = arch
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.out_indices = (0, 1, 2, 2)
    return cfg


@pytest.mark.parametrize('path', ADE_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_name_the_backbone_only(path: Path):
    """The derived configs state nothing the backbone knows: neither the neck's stride and width,
    nor the heads' input widths, nor the layer-decay depth."""
    cfg = Config.fromfile(path)
    assert cfg.model.type == 'BiXTEncoderDecoder'
    assert 'in_stride' not in cfg.model.neck and 'in_channels' not in cfg.model.neck
    assert 'in_channels' not in cfg.model.decode_head
    assert 'num_layers' not in cfg.optim_wrapper.paramwise_cfg
    text = path.read_text()
    assert 'in_stride' not in text and 'in_channels' not in text


@pytest.mark.parametrize('name', ['upernet_bixt_ti_ade20k.py', 'fpn_bixt_ti_ade20k.py'])
def test_neck_and_heads_follow_the_backbone(name: str):
    model = MODELS.build(model_cfg(name).model).eval()
    assert model.neck.in_stride == 8
    if model.neck.fpn is not None:
        assert list(model.neck.fpn.in_channels) == [32] * 4
    else:
        assert list(model.decode_head.in_channels) == [32] * 4
        assert model.auxiliary_head.in_channels == 32
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert outs.shape[-2:] == (16, 16)  # 1/4 of the input: the pyramid matches the stride


@pytest.mark.parametrize('setting, value, message', [
    ('neck.in_stride', 16, r"model\.neck\.in_stride=16 does not match the token stride of "
                           r"model\.backbone\.arch=.* = 8"),
    ('neck.in_channels', 64, r'model\.neck\.in_channels=64 does not match the width of .* = 32'),
    ('decode_head.in_channels', [64] * 4,
     r'model\.decode_head\.in_channels=\[64, 64, 64, 64\] does not match the neck outputs'),
    ('auxiliary_head.in_channels', 16, r'model\.auxiliary_head\.in_channels=16 does not match'),
])
def test_a_restated_setting_that_disagrees_is_refused_at_build_time(setting, value, message):
    cfg = model_cfg()
    part, key = setting.split('.')
    cfg.model[part][key] = value
    with pytest.raises(ValueError, match=message):
        MODELS.build(cfg.model)


@pytest.mark.parametrize('neck_type', ['mmseg.BiXTFeaturePyramid', 'class'])
def test_a_neck_named_by_scope_or_by_class_is_derived_as_well(neck_type):
    """Derivation compares classes (the registry's, ``issubclass``), not the name's text."""
    from mmbixt.models.necks import BiXTFeaturePyramid
    cfg = model_cfg()
    cfg.model.neck.type = BiXTFeaturePyramid if neck_type == 'class' else neck_type
    model = MODELS.build(cfg.model)
    assert model.neck.in_stride == 8 and list(model.decode_head.in_channels) == [32] * 4


def test_the_hooks_and_initialisers_are_told_by_class(tmp_path: Path):
    from mmengine.hooks import CheckpointHook
    from mmengine.model import PretrainedInit
    from mmengine.registry import WEIGHT_INITIALIZERS

    from mmbixt.models.derive import config_class, is_config_of
    from mmbixt.models.quiet_init import is_pretrained
    from mmseg.registry import HOOKS
    for kind in ('CheckpointHook', 'mmengine.CheckpointHook', CheckpointHook):
        assert config_class(dict(type=kind), HOOKS) is CheckpointHook
    assert config_class(dict(type='NoSuchHook'), HOOKS) is None
    assert is_config_of(dict(type='Pretrained'), PretrainedInit, WEIGHT_INITIALIZERS)
    assert is_pretrained(dict(type=PretrainedInit, checkpoint='x'))
    assert not is_pretrained(dict(type='Normal', std=0.01))


def test_a_restated_setting_that_agrees_is_accepted():
    cfg = model_cfg()
    cfg.model.neck.update(in_stride=8, in_channels=32)
    cfg.model.decode_head.in_channels = (32, 32, 32, 32)
    assert MODELS.build(cfg.model).neck.in_stride == 8


def test_the_neck_alone_needs_its_stride():
    with pytest.raises(ValueError, match='needs in_channels and in_stride'):
        MODELS.build(dict(type='BiXTFeaturePyramid', norm_cfg=dict(type='BN')))


@pytest.mark.parametrize('num_heads', [5, 7])
def test_num_heads_that_do_not_divide_the_width_are_refused(num_heads: int):
    cfg = model_cfg(arch=dict(TINY, num_heads=num_heads))
    with pytest.raises(ValueError, match=f'num_heads={num_heads} does not divide embed_dims=32'):
        MODELS.build(cfg.model)
    point = dict(type='PointBiXTBackbone', out_indices=(0, 1),
                 arch=dict(embed_dims=32, num_heads=num_heads, num_latents=8, num_layers=2))
    with pytest.raises(ValueError, match=f'num_heads={num_heads} does not divide embed_dims=32'):
        MODELS.build(point)


def test_part_head_widths_follow_the_point_backbone():
    cfg = Config.fromfile(REPO / 'configs' / 'bixt' / 'demo_partseg_bixt.py')
    model = MODELS.build(cfg.model)
    head_cfg = Config.fromfile(REPO / 'configs' / '_base_' / 'models' / 'partseg_bixt.py')
    assert not {'in_channels', 'num_inputs', 'point_channels'} & set(head_cfg.model.decode_head)
    points = torch.randn(2, 256, 6)
    from mmengine.structures import BaseDataElement
    samples = [BaseDataElement(metainfo=dict(category=0)) for _ in range(2)]
    assert model(points, samples, mode='tensor').shape == (2, 256, 50)
    cfg.model.decode_head.in_channels = 192
    with pytest.raises(ValueError, match=r'model\.decode_head\.in_channels=192 does not match'):
        MODELS.build(cfg.model)


def layer_decay_groups(model, **paramwise):
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type='BiXTLayerDecayOptimizerConstructor',
        optim_wrapper_cfg=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1.0)),
        paramwise_cfg=dict(layer_decay_rate=0.5, **paramwise)))
    groups = constructor(model).optimizer.param_groups
    return {name: g for g in groups for name in g['param_names']}


@pytest.mark.parametrize('num_layers', [3, 5])
def test_layer_decay_reads_the_depth_from_the_model(num_layers: int):
    model = MODELS.build(model_cfg(arch=dict(TINY, num_layers=num_layers)).model)
    by_name = layer_decay_groups(model)
    assert by_name['backbone.core.latents']['lr'] == pytest.approx(0.5 ** (num_layers + 1))
    assert by_name['backbone.core.blocks.0.cross_attention_latents_token.mlp_pat.fc1.weight'][
        'lr'] == pytest.approx(0.5 ** num_layers)
    with pytest.raises(ValueError, match=rf'paramwise_cfg\.num_layers=12 but the backbone has '
                                         rf'{num_layers} layers'):
        layer_decay_groups(model, num_layers=12)


@pytest.mark.parametrize('model_name', ['image', 'point'])
def test_every_embedding_parameter_gets_layer_zero(model_name: str):
    """Whatever feeds layer 0 (tokenizers, positional encodings, latents) decays the most; only
    the blocks and the output norms are elsewhere."""
    if model_name == 'image':
        model = MODELS.build(model_cfg().model)
    else:
        model = MODELS.build(Config.fromfile(
            REPO / 'configs' / 'bixt' / 'demo_partseg_bixt.py').model)
    names = [n for n, _ in model.backbone.named_parameters(prefix='backbone')]
    outside = [n for n in names if not n.startswith(('backbone.core.blocks.', 'backbone.out_norms.'))]
    assert outside and all(bixt_layer_id(n, model.backbone.num_layers) == 0 for n in outside), \
        [n for n in outside if bixt_layer_id(n, model.backbone.num_layers) != 0]


def test_head_classes_must_match_the_dataset(tmp_path: Path):
    from mmbixt.datasets import make_synthetic_ade20k
    root = make_synthetic_ade20k(tmp_path / 'data', num_train=1, num_val=1)
    cfg = Config.fromfile(REPO / 'configs' / 'bixt' / 'demo_upernet_bixt_ti.py')
    dataset = DATASETS.build(dict(cfg.val_dataloader.dataset, data_root=str(root)))
    model = MODELS.build(cfg.model)
    check_classes(model, dataset, 'val_dataloader')  # 5 and 5
    cfg.model.decode_head.num_classes = 150
    with pytest.raises(ValueError, match=r'model\.decode_head\.num_classes=150 but the dataset of '
                                         r'val_dataloader \(SyntheticADE20KDataset\) has 5 classes'):
        check_classes(MODELS.build(cfg.model), dataset, 'val_dataloader')
