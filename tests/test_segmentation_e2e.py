"""Segmentation suite end to end through tools/train.py and tools/test.py (subprocesses, CPU):
train -> checkpoint -> test, learning, --resume, 2-process DDP, errors before training."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmbixt.datasets import make_synthetic_ade20k
from mmseg.registry import MODELS

REPO = Path(__file__).resolve().parents[1]
CONFIG = 'configs/bixt/demo_upernet_bixt_ti.py'
# A tiny BiXT (stride 8 as the demo) to keep every run short.
# (The neck, heads and layer decay follow the backbone.)
TINY_VALUES = {'model.backbone.arch.embed_dims': 64, 'model.backbone.arch.num_heads': 2,
               'model.backbone.arch.num_latents': 16, 'model.backbone.arch.num_layers': 4,
               'model.backbone.out_indices': [0, 1, 2, 3]}
TINY = [f'{key}={value}'.replace(' ', '') for key, value in TINY_VALUES.items()]


def options(data_root: Path, *extra: str) -> list[str]:
    roots = [f'{loader}.dataset.data_root={data_root}'
             for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    return ['--cfg-options', *TINY, *roots, *extra]


def tool(*args: str, launcher: list[str] | None = None, check: bool = True
         ) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = (launcher or [sys.executable]) + list(args)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f'{" ".join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}')
    return proc


def miou(output: str) -> float:
    return float(re.findall(r'mIoU: ([\d.]+)', output)[-1])


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    return make_synthetic_ade20k(tmp_path_factory.mktemp('seg') / 'data', num_train=24, num_val=6)


@pytest.fixture(scope='module')
def trained(data: Path, tmp_path_factory) -> Path:
    """A 60-iteration run with checkpoints at 30 and 60 (no validation)."""
    work_dir = tmp_path_factory.mktemp('seg_train')
    tool('tools/train.py', CONFIG, '--work-dir', str(work_dir),
         *options(data, 'randomness.seed=0',  # unseeded, the learning check failed 1 run in many
                  'train_cfg.max_iters=60', 'train_cfg.val_interval=1000',
                  'default_hooks.checkpoint.interval=30',
                  'default_hooks.checkpoint.max_keep_ckpts=3',
                  'param_scheduler.1.end=60'))
    return work_dir


def test_train_checkpoint_test_and_learning(trained: Path, data: Path, tmp_path: Path):
    assert (trained / 'iter_60.pth').is_file()
    trained_out = tool('tools/test.py', CONFIG, str(trained / 'iter_60.pth'),
                       '--work-dir', str(tmp_path), '--show-dir', str(tmp_path / 'overlays'),
                       *options(data)).stdout
    overlays = list((tmp_path / 'overlays').rglob('*.png'))
    validation = list((data / 'images' / 'validation').glob('*.jpg'))
    assert len(overlays) == len(validation) > 0
    # The same model before training: its initial weights as an mmseg checkpoint.
    cfg = Config.fromfile(REPO / CONFIG)
    cfg.merge_from_dict(TINY_VALUES)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, tmp_path / 'untrained.pth')
    untrained_out = tool('tools/test.py', CONFIG, str(tmp_path / 'untrained.pth'),
                         '--work-dir', str(tmp_path), *options(data)).stdout
    assert 'mAcc' in trained_out and 'sky' in trained_out  # per-class table
    before, after = miou(untrained_out), miou(trained_out)
    print(f'mIoU untrained {before}, trained {after}')
    assert before < 25.0
    assert after > 45.0 and after > before + 25.0


def test_resume_continues_from_the_last_checkpoint(trained: Path, data: Path, tmp_path: Path):
    # An interrupted run: it got past iteration 30 but died before writing iteration 60.
    for name in ('iter_30.pth',):
        (tmp_path / name).write_bytes((trained / name).read_bytes())
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_30.pth'))
    out = tool('tools/train.py', CONFIG, '--work-dir', str(tmp_path), '--resume',
               *options(data, 'train_cfg.max_iters=34', 'train_cfg.val_interval=1000',
                        'default_hooks.logger.interval=1', 'param_scheduler.1.end=60'))
    log = out.stdout + out.stderr
    assert 'resumed' in log.lower()
    iterations = [int(i) for i in re.findall(r'Iter\(train\) \[\s*(\d+)/34\]', log)]
    assert iterations == [31, 32, 33, 34]
    assert (tmp_path / 'iter_34.pth').is_file()


def test_two_process_cpu_ddp_trains_with_the_real_configs_syncbn(data: Path, tmp_path: Path):
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                '--master_port=29571']
    sync_bn = [f'model.{part}.norm_cfg.type=SyncBN'
               for part in ('neck', 'decode_head', 'auxiliary_head')]
    out = tool('tools/train.py', CONFIG, '--launcher', 'pytorch', '--work-dir', str(tmp_path),
               *options(data, 'train_cfg.max_iters=3', 'train_cfg.val_interval=1000',
                        'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2',
                        *sync_bn),
               launcher=torchrun)
    log = out.stdout + out.stderr
    assert re.search(r'Iter\(train\) \[3/3\]', log)
    assert (tmp_path / 'iter_3.pth').is_file()


def test_missing_data_root_fails_before_training(tmp_path: Path):
    out = tool('tools/train.py', CONFIG, '--work-dir', str(tmp_path),
               *options(tmp_path / 'no_such_root'), check=False)
    assert out.returncode != 0
    log = out.stdout + out.stderr
    assert re.search(r'data root \S*no_such_root does not exist', log)
    assert 'Iter(train)' not in log


def test_infer_writes_one_readable_figure_per_image(trained: Path, data: Path, tmp_path: Path):
    from PIL import Image
    images = sorted((data / 'images' / 'validation').glob('*.jpg'))[:2]
    out = tool('tools/infer.py', CONFIG, str(trained / 'iter_60.pth'), *map(str, images),
               '--gt', str(data / 'annotations' / 'validation'), '--out-dir', str(tmp_path),
               '--layers', '1', '3', '--cfg-options', *TINY).stdout
    written = sorted(tmp_path.glob('*.png'))
    assert [p.name for p in written] == [f'{image.stem}_bixt.png' for image in images]
    for image, figure in zip(images, written):
        assert f'{image} -> {figure}' in out
        with Image.open(figure) as picture:
            assert picture.width >= 1200 and picture.height >= 512
    # A label map of another size is refused by name before the model loads.
    other = data / 'annotations' / 'validation' / f'{images[1].stem}.png'
    assert Image.open(images[0]).size != Image.open(images[1]).size
    refused = tool('tools/infer.py', CONFIG, str(trained / 'iter_60.pth'), str(images[0]),
                   '--gt', str(other), '--out-dir', str(tmp_path / 'no'), check=False)
    assert refused.returncode != 0 and f'error: {other} is ' in refused.stderr
    assert not (tmp_path / 'no').exists()
