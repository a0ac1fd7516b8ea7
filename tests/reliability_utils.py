"""Helpers for the reliability tests: a tiny BiXT UPerNet config on procedural data, and running
``tools/train.py`` in a subprocess (single process or torchrun)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from mmbixt.checkpoint import read_checkpoint
from mmbixt.datasets.synthetic import make_synthetic_ade20k

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / 'configs' / 'bixt' / 'demo_upernet_bixt_ti.py'
TRAIN = REPO / 'tools' / 'train.py'
SUBPROCESS_TIMEOUT = 300

# Random augmentations (exercise the resumed random streams) ...
RANDOM_PIPELINE = """[
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')]"""
# ... or none.
FIXED_PIPELINE = """[
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='Resize', scale=crop_size, keep_ratio=False),
    dict(type='PackSegInputs')]"""

CONFIG_TEMPLATE = """
_base_ = [{base!r}]
data_root = {data_root!r}
crop_size = (64, 64)
dims = 32
# GroupNorm, not BN: per-sample statistics, so a batch split over processes normalises the same.
norm_cfg = dict(type='GN', num_groups=4, requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=dims, num_heads=2, num_latents=8, num_layers=2,
                  tokenizer='linear', patch_size=16, stride=16),
        out_indices=(0, 1, 1, 1), drop_path_rate={drop}, init_cfg=None),
    neck=dict(in_channels=dims, in_stride=16, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[dims] * 4, channels=16, pool_scales=(1, 2), num_classes=5,
                     dropout_ratio={drop}, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=dims, channels=16, num_classes=5, dropout_ratio={drop},
                        norm_cfg=norm_cfg))
train_dataloader = dict(
    batch_size={batch_size}, num_workers={workers}, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(data_root=data_root, pipeline={train_pipeline}))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')]
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = {optim_wrapper}
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
    dict(type='PolyLR', power=1.0, eta_min=0.0, begin=2, end={iters}, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters}, val_interval={iters})
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval={ckpt_interval}, max_keep_ckpts=-1))
randomness = dict(seed=0, deterministic=True)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
"""

# The project's recipe: AdamW with layer-wise lr decay.
ADAMW = ("dict(optimizer=dict(lr=1e-3), "
         "paramwise_cfg=dict(num_layers=2, layer_decay_rate=0.9))")
# Plain SGD: Adam's first steps are lr * sign(grad), so rounding noise in a near-zero gradient
# can flip a whole step; SGD keeps weight differences proportional to gradient differences.
SGD = ("dict(_delete_=True, type='OptimWrapper', "
       "optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4))")


def make_tiny_data(root: Path) -> Path:
    """Eight training and two validation scenes, small enough for 64x64 crops."""
    return make_synthetic_ade20k(root, num_train=8, num_val=2, min_size=65, max_size=97)


def write_tiny_config(path: Path, data_root: Path, *, iters: int = 6, ckpt_interval: int = 2,
                      batch_size: int = 2, workers: int = 0, augment: bool = True,
                      dropout: float = 0.1, optimizer: str = ADAMW) -> Path:
    """A config for a tiny BiXT UPerNet (2 layers, 32 dims) on 64x64 crops, seeded and
    deterministic, validating once at the end; ``dropout`` is also the drop-path rate."""
    path.write_text(CONFIG_TEMPLATE.format(
        base=str(DEMO_CONFIG), data_root=str(data_root), iters=iters, ckpt_interval=ckpt_interval,
        batch_size=batch_size, workers=workers, drop=dropout, optim_wrapper=optimizer,
        train_pipeline=RANDOM_PIPELINE if augment else FIXED_PIPELINE))
    return path


def with_test_hooks(path: Path, base: Path, *hooks: dict) -> Path:
    """A config that is ``base`` plus hooks of ``tests/reliability_hooks.py``."""
    path.write_text(f"_base_ = [{str(base)!r}]\n"
                    "custom_imports = dict(imports=['mmbixt', 'mmbixt.operations', "
                    "'reliability_hooks'], allow_failed_imports=False)\n"
                    f"custom_hooks = {list(hooks)!r}\n")
    return path


def subprocess_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    # tests/ too: configs may import the helper hooks here (custom_imports)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), str(REPO / 'tests'),
                                                      env.get('PYTHONPATH')]))
    return env


def train_command(config: Path, work_dir: Path, extra: Sequence[str] = (),
                  nproc: Optional[int] = None) -> list[str]:
    """``tools/train.py`` as one process, or under torchrun with ``nproc`` CPU processes."""
    args = [str(TRAIN), str(config), '--work-dir', str(work_dir), *extra]
    if nproc is None:
        return [sys.executable, *args]
    return [sys.executable, '-m', 'torch.distributed.run', '--standalone',
            f'--nproc_per_node={nproc}', *args, '--launcher', 'pytorch']


def start_training(config: Path, work_dir: Path, extra: Sequence[str] = (),
                   nproc: Optional[int] = None) -> subprocess.Popen:
    """Starts ``tools/train.py``; its output goes to ``<work_dir>.log``."""
    work_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = work_dir.parent / f'{work_dir.name}.log'
    with open(log_path, 'w') as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(train_command(config, work_dir, extra, nproc),
                                   env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    process.log_path = log_path
    return process


def finish(process: subprocess.Popen) -> None:
    """Waits for a training started by :func:`start_training`; fails with its output's tail."""
    code = process.wait(timeout=SUBPROCESS_TIMEOUT)
    assert code == 0, f'training failed ({code}):\n{process.log_path.read_text()[-4000:]}'


def train(config: Path, work_dir: Path, extra: Sequence[str] = (),
          nproc: Optional[int] = None) -> None:
    """Runs a training to the end."""
    finish(start_training(config, work_dir, extra, nproc))


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(checkpoint)['state_dict']


def max_weight_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((x.double() - y.double()).abs().max().item() for x, y in zip(a.values(), b.values())
               if x.is_floating_point())


def scalar_records(work_dir: Path) -> list[dict]:
    """Every line of the ``vis_data/scalars.json`` files of the runs in ``work_dir``, in order."""
    files = sorted(work_dir.glob('*/vis_data/scalars.json'))
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def losses_by_iter(work_dir: Path) -> dict[int, float]:
    """The logged total loss of each training iteration (a resumed run's lines override)."""
    return {r['iter']: r['loss'] for r in scalar_records(work_dir) if 'loss' in r}


def final_metrics(work_dir: Path) -> dict[str, float]:
    """The metrics of the last validation in ``work_dir``."""
    evaluations = [r for r in scalar_records(work_dir) if 'mIoU' in r]
    assert evaluations, f'no validation result under {work_dir}'
    return {k: v for k, v in evaluations[-1].items() if k in ('aAcc', 'mIoU', 'mAcc')}
