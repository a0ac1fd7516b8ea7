"""Section ``train``: training steps of the segmentors (peak memory of the first step, time of
the next)."""
from __future__ import annotations

import statistics
import time
from typing import Callable

from .common import BACKBONES
from .measure import measure
from .segment import segmentor


def segmentor_step(model, size: int, batch: int) -> Callable:
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    shape = (size, size)
    samples = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(img_shape=shape, pad_shape=shape, ori_shape=shape))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1,) + shape))
        samples.append(sample)
    images = torch.randn(batch, 3, *shape)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        losses = model.loss(images, samples)
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        optimizer.step()
    return step


def train_case(case: str, args: dict) -> dict:
    """One training measurement (``head:backbone label:size``) in this fresh process: the first
    step gives the peak memory, the median of ``train_repeats`` steps after it the time (the first
    step's time when 0, and above 512 px, where one step is long enough to time alone)."""
    import torch
    torch.manual_seed(0)
    head, label, size = case.split(':')
    kind, stride = BACKBONES[label]
    model = segmentor(head, kind, stride, int(size))
    step = segmentor_step(model, int(size), args['train_batch'])
    first_ms, peak = measure(step)  # the first step's peak: AdamW's state is created in it
    times = []
    for _ in range(args['train_repeats'] if int(size) <= 512 else 0):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return {'ms': statistics.median(times or [first_ms]), 'peak_mb': peak}
