"""Measures the seconds one training iteration of a config takes on this machine, on synthetic
data of the config's own shape (its batch size, crop size or points per cloud, classes), with the
config's model, optimizer and losses: what a training would cost here before it is started.

    python tools/time_training.py CONFIG [CONFIG ...] [--iters 3] [--warmup 1] [--threads N]

Prints one line per config (median of ``--iters`` timed iterations after ``--warmup`` untimed
ones) and the CPU. No data, checkpoint or work dir is read or written; the backbone starts from
random weights (the time does not depend on them).
"""
from __future__ import annotations

import argparse
import os.path as osp
import platform
import statistics
import sys
import time

import mmbixt.operations  # noqa: F401,I001  (registers the models, the runner, layer decay)
import torch
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import BaseDataElement, PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmbixt.operations.cli import run_cli
from mmbixt.operations.engine.config_file import read_config


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Seconds per training iteration of configs, on '
                                     'synthetic data of their shape')
    parser.add_argument('configs', nargs='+', metavar='CONFIG')
    parser.add_argument('--iters', type=int, default=3, help='timed iterations (default 3)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed iterations first')
    parser.add_argument('--threads', type=int, help='torch threads (default: torch\'s choice)')
    return parser.parse_args(argv)


def point_batch(cfg, generator: torch.Generator) -> tuple[dict, str]:
    """A batch of random clouds of the config's size, category 0 and its parts."""
    loader = cfg.train_dataloader
    count = loader.dataset.get('num_points') or 2048
    channels = 6 if loader.dataset.get('use_normals', True) else 3
    samples = []
    for _ in range(loader.batch_size):
        sample = BaseDataElement(metainfo=dict(category=0))
        sample.gt_parts = torch.randint(0, 2, (count,), generator=generator)  # parts of category 0
        samples.append(sample)
    inputs = [torch.randn(count, channels, generator=generator) for _ in samples]
    return dict(inputs=inputs, data_samples=samples), f'{loader.batch_size} clouds of {count} points'


def image_batch(cfg, generator: torch.Generator) -> tuple[dict, str]:
    """A batch of random crops of the config's size with random labels of its classes."""
    height, width = cfg.get('crop_size') or cfg.model.data_preprocessor.size
    num_classes = cfg.model.decode_head.num_classes
    inputs, samples = [], []
    for _ in range(cfg.train_dataloader.batch_size):
        inputs.append(torch.randint(0, 256, (3, height, width), dtype=torch.uint8,
                                    generator=generator))
        sample = SegDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                             pad_shape=(height, width)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, height, width),
                                                         generator=generator))
        samples.append(sample)
    return (dict(inputs=inputs, data_samples=samples),
            f'{len(inputs)} crops of {height}x{width}')


def seconds_per_iteration(path: str, iters: int, warmup: int) -> tuple[float, str]:
    """Median seconds of a training step of the config ``path``, and what a batch is."""
    cfg = read_config(path)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    cfg.model.backbone.init_cfg = None  # random weights: the time is the same
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    generator = torch.Generator().manual_seed(0)
    points = 'num_points' in cfg.train_dataloader.dataset  # a point-cloud dataset
    data, batch = (point_batch if points else image_batch)(cfg, generator)
    times = []
    for step in range(warmup + iters):
        start = time.perf_counter()
        model.train_step(data, optim_wrapper)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times), batch


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else the machine type."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    MMLogger.get_instance('time_training', log_level='ERROR')  # no per-parameter lines
    print(f'CPU: {cpu_name()}, {torch.get_num_threads()} torch threads; median of {args.iters} '
          f'iterations after {args.warmup} warm-up', flush=True)
    for path in args.configs:
        seconds, batch = seconds_per_iteration(path, args.iters, args.warmup)
        print(f'{osp.basename(path)}: {seconds:.2f} s per iteration ({batch})', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
