"""Section ``profile``: ``torch.profiler``'s time per op of the calls behind the hardest goals."""
from __future__ import annotations

import time
from typing import Optional

from .forward import on_fast_path
from .peers import bixt_backbone
from .segment import segmentor, whole_image_batch


# What the goals that are hard to meet spend their time on, op by op (the explanation of a MISS):
# the fp32 and fast-path backbone against the original, Ti/4, and the segmentors' fast path.
PROFILES = {
    'BiXT-Ti/16 backbone, fp32': ('backbone', 16, 1024, 'fp32'),
    'BiXT-Ti/16 backbone, fast path': ('backbone', 16, 1024, 'fast path'),
    'BiXT-Ti/4 backbone, fp32': ('backbone', 4, 512, 'fp32'),
    'UPerNet-BiXT-Ti/16 whole image, fast path': ('upernet', 16, 512, 'fast path'),
    'Semantic FPN-BiXT-Ti/16 whole image, fast path': ('fpn', 16, 512, 'fast path')}
PROFILE_TOP = 8


def profile_case(case: str, size: Optional[int] = None) -> dict:
    """``torch.profiler``'s self CPU time per op of one warm call of ``PROFILES[case]`` (at
    ``size`` instead of its own, for smoke runs): the ``PROFILE_TOP`` largest, the rest summed."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    what, stride, own_size, mode = PROFILES[case]
    size = size or own_size
    torch.manual_seed(0)
    if what == 'backbone':
        model = bixt_backbone(stride)
        img = torch.randn(1, 3, size, size)
        call = lambda: model(img)  # noqa: E731
    else:
        model = segmentor(what, 'bixt', stride, size).eval()
        data = whole_image_batch(size)
        call = lambda: model.test_step(data)  # noqa: E731
    if mode == 'fast path':
        call = on_fast_path(call, model)
    with torch.no_grad():
        call()
        start = time.perf_counter()
        call()
        ms = (time.perf_counter() - start) * 1e3
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
    ops = sorted(((e.key, e.self_cpu_time_total / 1e3) for e in prof.key_averages()),
                 key=lambda op: -op[1])
    total = sum(t for _, t in ops) or 1.0
    top = [[name, t, t / total] for name, t in ops[:PROFILE_TOP]]
    rest = total - sum(t for _, t, _ in top)
    return {'size': size, 'ms': ms, 'profiled_ms': total,
            'ops': top + [['(all other ops)', rest, rest / total]]}


def profile_table(cases: dict) -> str:
    lines = ['| profile (one warm call, self CPU time) | op | ms | share |', '|---|---|---:|---:|']
    for case, result in cases.items():
        if 'ops' not in result:
            lines.append(f'| {case} | error: {result.get("error", "")} | | |')
            continue
        lines.append(f'| {case}, {result["size"]} px | (whole call, unprofiled) | '
                     f'{result["ms"]:.0f} | |')
        lines += [f'| | {name} | {t:.0f} | {share:.0%} |' for name, t, share in result['ops']]
    return '\n'.join(lines)
