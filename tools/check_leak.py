"""Checks that repeated inference does not leak memory: runs ``mmseg.apis.inference_model`` many
times on one model and reports the resident memory (RSS) every ``--interval`` calls, the RSS at the
start and the end, and the slope of a least-squares line through the samples.

    python tools/check_leak.py [CONFIG] [--checkpoint CKPT] [--calls 1000] [--interval 100]
        [--image-size 96] [--max-growth-mib 8]

The first ``--warmup`` calls are not measured (allocator pools, lazily built modules and caches
fill up there). Exits with status 1 when the fitted growth over the measured calls exceeds
``--max-growth-mib``.
"""
from __future__ import annotations

import argparse
import gc
import os
import os.path as osp
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from mmbixt.operations.cli import run_cli

DEFAULT_CONFIG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                          'configs', 'bixt', 'demo_upernet_bixt_ti.py')
MIB = 2**20


def rss_bytes() -> int:
    """This process's resident set size, from ``/proc/self/status`` (Linux)."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    raise RuntimeError('VmRSS not found in /proc/self/status')


@dataclass
class LeakReport:
    """RSS samples (``calls[i]`` calls after warm-up, ``rss[i]`` bytes) and their summary."""
    calls: list[int]
    rss: list[int]

    @property
    def slope_bytes_per_call(self) -> float:
        """Least-squares slope of RSS over calls: robust to single-sample noise."""
        if len(self.calls) < 2:
            return 0.0
        return float(np.polyfit(np.asarray(self.calls, float), np.asarray(self.rss, float), 1)[0])

    @property
    def fitted_growth_bytes(self) -> float:
        return self.slope_bytes_per_call * (self.calls[-1] - self.calls[0])

    def leaks(self, max_growth_mib: float) -> bool:
        return self.fitted_growth_bytes > max_growth_mib * MIB

    def summary(self) -> str:
        return (f'RSS start {self.rss[0] / MIB:.1f} MiB, end {self.rss[-1] / MIB:.1f} MiB '
                f'(change {(self.rss[-1] - self.rss[0]) / MIB:+.2f} MiB over '
                f'{self.calls[-1] - self.calls[0]} calls); slope '
                f'{self.slope_bytes_per_call / 1024 * 1000:+.1f} KiB per 1000 calls, fitted growth '
                f'{self.fitted_growth_bytes / MIB:+.2f} MiB')


def sample_images(size: int, count: int = 4, seed: int = 0) -> list[np.ndarray]:
    """A few BGR uint8 images of slightly different sizes (as a service would receive)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size + 7 * i, size + 5 * i, 3), dtype=np.uint8)
            for i in range(count)]


def measure(model, images: Sequence[np.ndarray], calls: int, interval: int, warmup: int,
            log=print) -> LeakReport:
    """Runs ``warmup`` + ``calls`` inferences, sampling RSS (after a GC) every ``interval``."""
    from mmseg.apis import inference_model

    def infer(index: int) -> None:
        inference_model(model, images[index % len(images)])

    for index in range(warmup):
        infer(index)
    report = LeakReport([], [])
    for done in range(calls + 1):
        if done % interval == 0 or done == calls:
            gc.collect()
            report.calls.append(done)
            report.rss.append(rss_bytes())
            log(f'calls {done:6d}  RSS {report.rss[-1] / MIB:8.2f} MiB')
        if done < calls:
            infer(warmup + done)
    return report


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='RSS over repeated inference')
    parser.add_argument('config', nargs='?', default=DEFAULT_CONFIG, help='model config')
    parser.add_argument('--checkpoint', help='weights (default: the config\'s initialisation)')
    parser.add_argument('--calls', type=int, default=1000, help='measured inference calls')
    parser.add_argument('--interval', type=int, default=100, help='calls between RSS samples')
    parser.add_argument('--warmup', type=int, default=20, help='calls before measuring')
    parser.add_argument('--image-size', type=int, default=96, help='side of the test images')
    parser.add_argument('--max-growth-mib', type=float, default=8.0,
                        help='fitted RSS growth over the measured calls that counts as a leak')
    parser.add_argument('--device', default='cpu')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import torch
    from mmseg.apis import init_model

    import mmbixt  # noqa: F401  (registers modules)
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', torch.get_num_threads())))
    from mmbixt.checkpoint.model_match import load_model_checkpoint
    model = init_model(args.config, None, device='cpu')
    if args.checkpoint:  # checked against the model, as every route loads
        load_model_checkpoint(model, args.checkpoint)
    model = model.to(args.device).eval()
    report = measure(model, sample_images(args.image_size), args.calls, args.interval, args.warmup)
    print(report.summary())
    leaking = report.leaks(args.max_growth_mib)
    print(f'verdict: {"LEAK" if leaking else "flat"} (limit {args.max_growth_mib} MiB)')
    return 1 if leaking else 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
