"""Checks a training runs on any segmentation dataset type (mmseg's BaseSegDataset and
ADE20KDataset with mmseg's own pipeline, no step of ours) before its first iteration, the label
statistics and their warnings, and the from-scratch recipe of ``checkpoint = None``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS
from mmseg.structures import SegDataSample
from mmengine.structures import PixelData
from PIL import Image

import mmbixt.operations  # noqa: F401  (registers the models, the runner and its hooks)
from mmbixt.datasets import SegDataError
from mmbixt.operations.engine import BiXTRunner
from mmbixt.operations.engine.config_file import train_from_scratch_if_asked
from mmbixt.operations.checks.label_stats import SplitLabels, label_report
from mmbixt.operations.checks.training import build_checked_dataset, check_batch_labels

REPO = Path(__file__).resolve().parents[1]
CPU_TEMPLATE = REPO / 'configs' / 'bixt' / 'my_data_upernet_bixt_cpu.py'
TI_TEMPLATE = REPO / 'configs' / 'bixt' / 'my_data_upernet_bixt_ti.py'
TINY_ARCH = dict(embed_dims=16, num_heads=2, num_latents=4, num_layers=2, tokenizer='linear',
                 patch_size=16, stride=16)
CLASSES = ('background', 'circle', 'square', 'triangle')


def write_data(root: Path, num: int = 4, mask_suffix: str = '_mask.png', classes: int = 4
               ) -> Path:
    """The issue's layout: images/<split>/*.jpg, mask/<split>/*_mask.png, 255 borders."""
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for kind in ('images', 'mask'):
            (root / kind / split).mkdir(parents=True, exist_ok=True)
        for index in range(num):
            weights = [0.5] + [0.5 / (classes - 1)] * (classes - 1)  # 0 (background) most often
            label = rng.choice(classes, (32, 48), p=weights).astype(np.uint8)
            label[0] = 255
            Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(
                root / 'images' / split / f'{index:02d}.jpg')
            Image.fromarray(label).save(root / 'mask' / split / f'{index:02d}{mask_suffix}')
    return root


def mmseg_config(root: Path, work_dir: Path, dataset_type: str = 'BaseSegDataset',
                 **dataset) -> Config:
    """A config as mmseg users write it: mmseg's dataset class and pipeline, a tiny BiXT."""
    cfg = Config.fromfile(str(CPU_TEMPLATE))
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                dict(type='RandomCrop', crop_size=(32, 32)), dict(type='PackSegInputs')]
    settings = dict(type=dataset_type, data_root=str(root), img_suffix='.jpg',
                    seg_map_suffix='_mask.png', metainfo=dict(classes=CLASSES),
                    data_prefix=dict(img_path='images/train', seg_map_path='mask/train'),
                    pipeline=pipeline)
    settings.update(dataset)
    cfg.train_dataloader.dataset = settings
    cfg.train_dataloader.batch_size = 2
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    cfg.model.backbone.arch = TINY_ARCH
    cfg.model.backbone.out_indices = (0, 1)
    cfg.model.decode_head.update(in_index=[0, 1], pool_scales=(1, 2), num_classes=len(CLASSES))
    cfg.model.auxiliary_head.update(in_index=1, num_classes=len(CLASSES))
    cfg.model.data_preprocessor.size = (32, 32)
    cfg.model.neck.out_strides = (8, 16)
    cfg.train_cfg.update(max_iters=1, val_interval=10)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint.interval = 10
    cfg.work_dir = str(work_dir)
    return cfg


def test_wrong_img_suffix_of_mmseg_dataset_names_folder_suffix_and_files(tmp_path: Path):
    cfg = mmseg_config(write_data(tmp_path / 'data'), tmp_path / 'work', img_suffix='.png')
    with pytest.raises(SegDataError, match=r"0 images with suffix \.png under \S+images/train: "
                       r"set the dataset's img_suffix to the images' suffix, e\.g\. "
                       r"img_suffix='\.jpg' \(found: 4 \.jpg\)"):
        BiXTRunner.from_cfg(cfg).train()


def test_wrong_folder_and_seg_map_suffix_give_one_hint_each(tmp_path: Path):
    root = write_data(tmp_path / 'data')
    init_default_scope('mmseg')
    base = mmseg_config(root, tmp_path / 'work').train_dataloader.dataset.to_dict()
    with pytest.raises(SegDataError, match=r'split folder \S+labels/train does not exist '
                       r'\(data_prefix seg_map_path under data_root \S+\); train exists in '
                       r'\S+/images, \S+/mask: set data_prefix seg_map_path'):
        build_checked_dataset({**base, 'data_prefix': dict(img_path='images/train',
                                                           seg_map_path='labels/train')}, DATASETS)
    with pytest.raises(SegDataError, match=r"^4 of 4 images under \S+images/train have no label "
                       r"map <name>\.png under \S+mask/train, but the label maps there are named "
                       r"<name>_mask\.png \(e\.g\. \S+mask/train/00_mask\.png\): set the dataset's "
                       r"seg_map_suffix='_mask\.png'$"):
        build_checked_dataset({**base, 'type': 'ADE20KDataset', 'seg_map_suffix': '.png', 'metainfo': None,
                               'reduce_zero_label': False}, DATASETS)


def test_label_above_the_classes_is_named_before_the_first_iteration(tmp_path: Path):
    root = write_data(tmp_path / 'data')
    bad = root / 'mask' / 'train' / '02_mask.png'
    label = np.asarray(Image.open(bad)).copy()
    label[5, 5] = 9
    Image.fromarray(label).save(bad)
    runner = BiXTRunner.from_cfg(mmseg_config(root, tmp_path / 'work'))
    with pytest.raises(SegDataError, match=r'mask/train/02_mask\.png: label values \[9\] exceed '
                                           r'the 4 classes'):
        runner.train()
    assert not list((tmp_path / 'work').glob('iter_*.pth'))


def test_batch_labels_are_checked_where_they_meet_the_model():
    init_default_scope('mmseg')
    model = MODELS.build(dict(type='BiXTEncoderDecoder', backbone=dict(
        type='BiXTBackbone', arch=TINY_ARCH, out_indices=(0, 1)),
        neck=dict(type='BiXTFeaturePyramid', out_strides=(8, 16)),
        decode_head=dict(type='FCNHead', in_index=1, channels=8, num_convs=1, num_classes=3)))
    sample = SegDataSample(metainfo=dict(seg_map_path='ann/x.png', reduce_zero_label=True))
    sample.gt_sem_seg = PixelData(data=torch.tensor([[[0, 2, 255]]]))
    check_batch_labels(model, dict(data_samples=[sample]))  # within the classes
    sample.gt_sem_seg = PixelData(data=torch.tensor([[[0, 3, 255]]]))
    with pytest.raises(SegDataError, match=r'ann/x\.png \(label map of a batch\): label values '
                                           r'\[4\] exceed the 3 classes \(allowed values: 0\.\.3 '
                                           r'with 0 = other'):
        check_batch_labels(model, dict(data_samples=[sample]))


def test_label_statistics_warn_of_absent_classes_and_an_ignored_zero():
    stats = SplitLabels('train', CLASSES[1:], reduce_zero_label=True, total=1)
    stats.add(np.array([[0, 0, 0, 0, 1, 2, 255]]))
    line, warnings = label_report(stats)
    assert line == ('train: 1 label maps; class shares of the labelled pixels, reduce_zero_label: '
                    'circle 50.0%, square 50.0%, triangle 0.0%; ignored: value 255 14.3%, '
                    'value 0 57.1% of all pixels')
    assert warnings[0].startswith("train: class 'triangle' (value 3) never occurs in its 1 label "
                                  'maps')
    assert warnings[1].startswith('train: reduce_zero_label=True ignores value 0, the most '
                                  'frequent value (67% of the pixels that are not 255): if 0 is '
                                  'a class')


@pytest.mark.parametrize('template, lr', [(TI_TEMPLATE, 5e-4), (CPU_TEMPLATE, 1e-3)])
def test_checkpoint_none_builds_the_from_scratch_optimizer(template: Path, lr: float):
    cfg = Config.fromfile(str(template))
    cfg.checkpoint = None
    train_from_scratch_if_asked(cfg)
    assert cfg.model.backbone.init_cfg is None
    init_default_scope('mmseg')
    cfg.model.backbone.arch = TINY_ARCH
    cfg.model.backbone.out_indices = (0, 1)
    cfg.model.decode_head.update(in_index=[0, 1], pool_scales=(1, 2))
    cfg.model.auxiliary_head.in_index = 1
    cfg.model.neck.out_strides = (8, 16)
    optimizer = build_optim_wrapper(MODELS.build(cfg.model), cfg.optim_wrapper).optimizer
    assert {group['lr'] for group in optimizer.param_groups} == {lr}  # no layer decay
    assert cfg.param_scheduler[0].end == (200 if template == TI_TEMPLATE else 30)


def test_checkpoint_none_without_a_recipe_switches_layer_decay_off(tmp_path: Path):
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = ['{REPO}/configs/bixt/upernet_bixt_ti_ade20k.py']\n"
                     'checkpoint = None\n')
    cfg = Config.fromfile(str(child))
    train_from_scratch_if_asked(cfg)
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 1.0
    assert cfg.optim_wrapper.optimizer.lr == 1e-4


def test_validation_table_marks_classes_absent_from_the_split(capsys):
    from mmseg.evaluation import IoUMetric

    from mmbixt.evaluation import BiXTIoUMetric
    MMLogger.get_instance('absent_classes_table')  # the current logger, writing to this test
    sample = dict(pred_sem_seg=dict(data=torch.tensor([[[0, 1, 1, 3]]])),
                  gt_sem_seg=dict(data=torch.tensor([[[0, 1, 0, 1]]])))
    scores = []
    for metric in (IoUMetric(), BiXTIoUMetric()):
        metric.dataset_meta = dict(classes=CLASSES)
        metric.process([], [sample])
        scores.append(metric.compute_metrics(metric.results))
    assert scores[0] == scores[1]  # mmseg's numbers
    out = capsys.readouterr().out
    assert out.count('absent') == 2 * 2 + 1 and 'nan' in out  # IoU, Acc of 2 classes; a note
    assert "absent: no pixel of the ground truth of this split is square, triangle" in out
