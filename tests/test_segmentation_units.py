"""Segmentation suite, fast units: configs, neck, layer-wise lr decay, data checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

import mmbixt.operations  # noqa: F401  (registers the model layer and the layer decay)
from mmbixt.datasets import SegDataError, make_synthetic_ade20k
from mmseg.registry import DATASETS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS

REPO = Path(__file__).resolve().parents[1]
SEG_CONFIGS = sorted(p for p in (REPO / 'configs' / 'bixt').glob('*.py') if 'partseg' not in p.name)
TINY_ARCH = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=4, tokenizer='linear',
                 patch_size=16, stride=16)

init_default_scope('mmseg')


@pytest.mark.parametrize('path', SEG_CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_builds(path: Path):
    cfg = Config.fromfile(path)
    backbone = cfg.model.backbone
    if path.name.startswith('demo'):
        assert backbone.get('init_cfg') is None
    elif path.name == 'my_data_upernet_bixt_cpu.py':  # the CPU template: from scratch
        assert cfg.checkpoint is None and backbone.get('init_cfg') is None
        assert cfg.model.decode_head.num_classes == len(cfg.classes) == 3
        assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 1.0
    elif path.name.startswith('my_data'):  # the template for your own data
        assert backbone.init_cfg.checkpoint == 'checkpoints/bixt_ti_l64_d13_p16.zip'
        assert cfg.model.decode_head.num_classes == len(cfg.classes) == 3
        assert cfg.param_scheduler[0].end == 50 and cfg.train_cfg.max_iters == 2000
    else:
        assert backbone.init_cfg.checkpoint == f'checkpoints/{backbone.arch}.zip'
        assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'
        assert cfg.model.decode_head.num_classes == 150
        assert cfg.train_cfg.max_iters == (160000 if path.name.startswith('upernet') else 80000)
        assert cfg.optim_wrapper.constructor == 'BiXTLayerDecayOptimizerConstructor'
    backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert model.neck.in_stride == model.backbone.stride


@pytest.mark.parametrize('stride', [4, 8, 16])
@pytest.mark.parametrize('fpn', [False, True])
def test_neck_makes_a_quarter_to_thirtysecond_pyramid(stride: int, fpn: bool):
    fpn_cfg = dict(type='FPN', in_channels=[8] * 4, out_channels=6, num_outs=4) if fpn else None
    neck = MODELS.build(dict(type='BiXTFeaturePyramid', in_channels=8, in_stride=stride,
                             norm_cfg=dict(type='BN'), fpn=fpn_cfg))
    size = 128 // stride
    outs = neck([torch.randn(2, 8, size, size) for _ in range(4)])
    assert [tuple(o.shape) for o in outs] == [(2, 6 if fpn else 8, 128 // s, 128 // s)
                                               for s in (4, 8, 16, 32)]
    learned_upsampling = sum(isinstance(m, torch.nn.ConvTranspose2d) for m in neck.modules())
    assert learned_upsampling == {4: 0, 8: 1, 16: 3}[stride]


def test_neck_rejects_a_stride_ratio_that_is_not_a_power_of_two():
    with pytest.raises(ValueError, match='power of two'):
        MODELS.build(dict(type='BiXTFeaturePyramid', in_channels=8, in_stride=16,
                          out_strides=(4, 8, 12, 32)))


def tiny_segmentor(layer_scale: bool = False):
    cfg = Config.fromfile(REPO / 'configs' / 'bixt' / 'demo_upernet_bixt_ti.py')
    cfg.model.backbone.arch = dict(TINY_ARCH, layer_scale=layer_scale)
    cfg.model.backbone.out_indices = (0, 1, 2, 3)
    cfg.model.neck.update(in_channels=32, in_stride=16)
    cfg.model.decode_head.in_channels = [32] * 4
    cfg.model.auxiliary_head.in_channels = 32
    return MODELS.build(cfg.model)


def test_layer_decay_groups():
    model = tiny_segmentor(layer_scale=True)
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type='BiXTLayerDecayOptimizerConstructor',
        optim_wrapper_cfg=dict(type='OptimWrapper',
                               optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05)),
        paramwise_cfg=dict(num_layers=4, layer_decay_rate=0.5)))
    groups = constructor(model).optimizer.param_groups
    by_name = {name: g for g in groups for name in g['param_names']}
    assert len(by_name) == sum(1 for p in model.parameters() if p.requires_grad)

    def lr(name):
        return by_name[name]['lr']

    assert lr('backbone.patch_embed.proj.weight') == pytest.approx(0.5 ** 5)
    assert lr('backbone.core.latents') == pytest.approx(0.5 ** 5)
    assert lr('backbone.fourier_pos_encode.token_projection.weight') == pytest.approx(0.5 ** 5)
    for i in range(4):
        assert lr(f'backbone.core.blocks.{i}.cross_attention_latents_token.mlp_pat.fc1.weight') \
            == pytest.approx(0.5 ** (4 - i))
    # The last layer's latent side reaches no output: not trained, so in no group.
    assert 'backbone.core.blocks.3.self_attention_latents.attn.qkv.weight' not in by_name
    assert lr('backbone.out_norms.0.weight') == 1.0
    assert lr('decode_head.conv_seg.weight') == 1.0
    assert lr('neck.rescales.0.0.weight') == 1.0

    def wd(name):
        return by_name[name]['weight_decay']

    assert wd('backbone.core.blocks.0.cross_attention_latents_token.attn.rv_latents.weight') == 0.05
    for name in ('backbone.core.latents',
                 'backbone.core.blocks.1.cross_attention_latents_token.norm1_lat.weight',
                 'backbone.core.blocks.1.cross_attention_latents_token.attn.rv_latents.bias',
                 'backbone.core.blocks.2.self_attention_latents.ls1.gamma',
                 'decode_head.conv_seg.bias'):
        assert wd(name) == 0.0, name
    assert sorted({g['layer_id'] for g in groups}) == [0, 1, 2, 3, 4, 5]


# ------------------------------------------------------------------ bad input
def synthetic_dataset(root: Path, split: str = 'training'):
    return DATASETS.build(dict(
        type='SyntheticADE20KDataset', data_root=str(root),
        data_prefix=dict(img_path=f'images/{split}', seg_map_path=f'annotations/{split}'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='CheckSegSample'), dict(type='PackSegInputs')]))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_synthetic_ade20k(tmp_path / 'data', num_train=3, num_val=1)


def test_synthetic_data_has_odd_sizes_and_ade_labels(data: Path):
    labels = sorted((data / 'annotations' / 'training').glob('*.png'))
    assert len(labels) == 3
    for label_file in labels:
        label = np.asarray(Image.open(label_file))
        assert label.shape[0] % 2 == 1 and label.shape[1] % 2 == 1
        assert label.max() <= 5 and (label == 0).any()
    sample = synthetic_dataset(data)[0]
    assert set(np.unique(sample['data_samples'].gt_sem_seg.data.numpy())) <= {0, 1, 2, 3, 4, 255}


def test_missing_data_root_is_named(tmp_path: Path):
    with pytest.raises(SegDataError, match=r'nowhere.*does not exist'):
        synthetic_dataset(tmp_path / 'nowhere')


def test_empty_split_is_named(data: Path):
    for folder in ('images', 'annotations'):
        (data / folder / 'empty').mkdir()
    with pytest.raises(SegDataError, match=r'0 images with suffix \.jpg under \S*images/empty: set the dataset.s img_suffix'):
        synthetic_dataset(data, 'empty')


def test_image_without_label_is_named(data: Path):
    (data / 'annotations' / 'training' / 'synth_training_00001.png').unlink()
    with pytest.raises(SegDataError, match=r'synth_training_00001\.png does not exist'):
        synthetic_dataset(data)


def first_label(data: Path) -> Path:
    return data / 'annotations' / 'training' / 'synth_training_00000.png'


def test_label_values_beyond_the_classes_are_named(data: Path):
    label = np.asarray(Image.open(first_label(data))).copy()
    label[:2, :2] = 9
    Image.fromarray(label).save(first_label(data))
    with pytest.raises(SegDataError, match=r'synth_training_00000\.png: label values \[9\] exceed '
                                           r'the 5 classes'):
        synthetic_dataset(data)[0]


def test_image_and_label_of_different_sizes_are_named(data: Path):
    label = Image.open(first_label(data))
    label.resize((label.width + 2, label.height)).save(first_label(data))
    with pytest.raises(SegDataError, match=r'synth_training_00000\.png: image is \d+x\d+ .* but '
                                           r'its label map is'):
        synthetic_dataset(data)[0]


def test_unreadable_image_is_named(data: Path):
    (data / 'images' / 'training' / 'synth_training_00000.jpg').write_bytes(b'not a jpeg')
    with pytest.raises(SegDataError, match=r'synth_training_00000\.jpg.*cannot be loaded'):
        synthetic_dataset(data)[0]
