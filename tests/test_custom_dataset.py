"""Your own data: BiXTSegDataset and the template config configs/bixt/my_data_upernet_bixt_ti.py
check folders, pairs and label values when the dataset is built (an ordinary mmseg pipeline, no
CheckSegSample), and every message names the file and the setting."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

import mmbixt  # noqa: F401  (registers)
from mmbixt.datasets import SegDataError
from mmbixt.operations.engine.config_file import train_from_scratch_if_asked
from mmseg.registry import DATASETS, MODELS

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / 'configs' / 'bixt' / 'my_data_upernet_bixt_ti.py'
TINY_ARCH = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=4, tokenizer='linear',
                 patch_size=16, stride=16)


def write_my_data(root: Path, num: int = 3, num_classes: int = 3, img_suffix: str = '.jpg'
                  ) -> Path:
    """``images/{train,val}`` and ``labels/{train,val}`` of random 40x52 samples."""
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for kind in ('images', 'labels'):
            (root / kind / split).mkdir(parents=True, exist_ok=True)
        for index in range(num):
            image = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
            label = rng.integers(0, num_classes, (40, 52), dtype=np.uint8)
            Image.fromarray(image).save(root / 'images' / split / f'{index}{img_suffix}')
            Image.fromarray(label).save(root / 'labels' / split / f'{index}.png')
    return root


def template(root: Path) -> Config:
    cfg = Config.fromfile(str(TEMPLATE))
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = str(root)
    return cfg


def build(dataset_cfg: dict, **changes):
    init_default_scope('mmseg')
    return DATASETS.build({**dataset_cfg, **changes})


def test_template_trains_a_step_on_my_data(tmp_path: Path):
    cfg = template(write_my_data(tmp_path))
    train = build(cfg.train_dataloader.dataset)
    assert len(train) == 3 and train.metainfo['classes'] == ('background', 'road', 'car')
    samples = [train[0], train[1]]  # two: BatchNorm needs more than one value per channel
    assert all(max(s['inputs'].shape[1:]) == 256 for s in samples)  # the crop
    cfg.model.backbone.update(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), init_cfg=None)
    model = MODELS.build(cfg.model)
    model.init_weights()
    batch = model.data_preprocessor(dict(inputs=[s['inputs'] for s in samples],
                                         data_samples=[s['data_samples'] for s in samples]),
                                    training=True)
    losses = model(**batch, mode='loss')
    assert torch.isfinite(sum(v for k, v in losses.items() if 'loss' in k))


def test_forgotten_img_suffix_names_the_setting(tmp_path: Path):
    cfg = template(write_my_data(tmp_path, img_suffix='.png'))
    with pytest.raises(SegDataError, match=r"0 images with suffix \.jpg under \S+images/train: "
                                           r"set the dataset's img_suffix .*found: 3 \.png"):
        build(cfg.train_dataloader.dataset)


def test_label_value_above_the_classes_names_the_file_at_build(tmp_path: Path):
    root = write_my_data(tmp_path)
    bad = root / 'labels' / 'train' / '2.png'
    label = np.asarray(Image.open(bad)).copy()
    label[0, 0] = 7
    Image.fromarray(label).save(bad)
    cfg = template(root)
    with pytest.raises(SegDataError, match=r'labels/train/2\.png: label values \[7\] exceed the 3 '
                                           r'classes \(allowed values: 0\.\.2 and 255'):
        build(cfg.train_dataloader.dataset)
    lazy = build(cfg.train_dataloader.dataset, check_labels_at_build=False)
    lazy[0]
    with pytest.raises(SegDataError, match=r'labels/train/2\.png: label values \[7\]'):
        lazy[2]


def test_rgb_label_map_and_size_mismatch_are_named_at_build(tmp_path: Path):
    root = write_my_data(tmp_path)
    Image.new('RGB', (52, 40)).save(root / 'labels' / 'train' / '1.png')
    cfg = template(root)
    with pytest.raises(SegDataError, match=r'labels/train/1\.png: label map has 3 channels'):
        build(cfg.train_dataloader.dataset)
    Image.new('L', (50, 40)).save(root / 'labels' / 'train' / '1.png')
    with pytest.raises(SegDataError, match=r'images/train/1\.jpg / \S+1\.png: image is 52x40 '
                                           r'\(WxH\) but its label map is 50x40'):
        build(cfg.train_dataloader.dataset)


def test_reduce_zero_label_allows_one_more_value(tmp_path: Path):
    cfg = template(write_my_data(tmp_path, num_classes=4))  # values 0..3, 0 = other
    with pytest.raises(SegDataError, match=r'label values \[3\] exceed'):
        build(cfg.train_dataloader.dataset)
    assert len(build(cfg.train_dataloader.dataset, reduce_zero_label=True)) == 3


def test_classes_are_required(tmp_path: Path):
    cfg = template(write_my_data(tmp_path))
    with pytest.raises(SegDataError, match=r'needs the class names: set the dataset.s '
                                           r'metainfo=dict\(classes='):
        build(cfg.train_dataloader.dataset, metainfo=None)


def test_missing_data_root_names_the_setting(tmp_path: Path):
    cfg = template(tmp_path / 'nowhere')
    with pytest.raises(SegDataError, match=r'nowhere does not exist \(set data_root'):
        build(cfg.train_dataloader.dataset)


def test_checkpoint_none_in_a_child_config_trains_from_scratch(tmp_path: Path):
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = ['{REPO}/configs/bixt/upernet_bixt_ti_ade20k.py']\n"
                     'checkpoint = None\n')
    cfg = Config.fromfile(str(child))
    assert cfg.model.backbone.init_cfg.checkpoint.endswith('.zip')  # mmengine's base resolution
    train_from_scratch_if_asked(cfg)
    assert cfg.model.backbone.init_cfg is None


def test_missing_checkpoint_names_the_weights_and_the_way_to_train_from_scratch(tmp_path: Path):
    init_default_scope('mmseg')
    backbone = MODELS.build(dict(type='BiXTBackbone', arch=TINY_ARCH, out_indices=(1, 3),
                                 init_cfg=dict(type='Pretrained',
                                               checkpoint=str(tmp_path / 'missing.zip'))))
    with pytest.raises(ValueError, match=r'missing\.zip: does not exist\. Download the zip from '
                                         r'the weights table of https://github\.com/mrkshllr/BiXT'
                                         r'.*model\.backbone\.init_cfg=None'):
        backbone.init_weights()


def test_check_dataset_lists_every_bad_file_of_a_config(tmp_path: Path, capsys):
    from conftest import load_tool
    root = write_my_data(tmp_path / 'data')
    (root / 'labels' / 'train' / '2.png').unlink()
    label = np.asarray(Image.open(root / 'labels' / 'val' / '1.png')).copy()
    label[0, 0] = 9
    Image.fromarray(label).save(root / 'labels' / 'val' / '1.png')
    config = tmp_path / 'mine.py'
    config.write_text(f"_base_ = ['{TEMPLATE}']\n"
                      f"train_dataloader = dict(dataset=dict(data_root='{root}'))\n"
                      f"val_dataloader = dict(dataset=dict(data_root='{root}'))\n"
                      'test_dataloader = val_dataloader\n')
    assert load_tool('check_dataset').main([str(config), '--workers', '1']) == 1
    lines = capsys.readouterr().out.splitlines()
    errors = [line for line in lines if line.startswith('error: ')]
    assert errors[0] == f'error: {root}/images/train/2.jpg: its label map ' \
                        f'{root}/labels/train/2.png does not exist'
    assert errors[1].startswith(f'error: {root}/labels/val/1.png: label values [9] exceed')
    assert '(config, splits train, val, test): 4 samples checked in' in lines[-1]
    assert lines[-1].endswith('2 problem(s), 0 warning(s), 0 note(s)')
