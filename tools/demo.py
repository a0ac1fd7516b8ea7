"""`make demo`: train, test and draw a small BiXT segmenter on procedural ADE20K-layout scenes.

Writes everything under demo_output/: data/ (generated once, then reused), work_dir/ (logs and
checkpoints), pictures/ (one figure per validation image: input, prediction, ground truth, classes,
where the latents look). Runs on a CPU in a few minutes.

    python tools/demo.py [--seed 0]

The training is seeded (``randomness.seed``, default 0) and runs one thread per process unless
OMP_NUM_THREADS says otherwise, so a seed gives the same mIoU on every run on a machine; another
class of CPU (AVX2, ARM) rounds differently and moves it by a few tenths (docs/segmentation.md).
"""
from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

from mmbixt.datasets import make_synthetic_ade20k
from mmbixt.operations.cli import run_tool

REPO = Path(__file__).resolve().parents[1]

CONFIG = 'configs/bixt/demo_upernet_bixt_ti.py'
OUT = Path('demo_output')
SHOWN = re.compile(r'Iter\(|mIoU: |^[|+]|Error|error:|^\S+ -> ')


def run(step: str, args: list[str]) -> str:
    """Runs a tool, echoing its progress lines; returns its whole output."""
    print(f'== {step}: {" ".join(args)}', flush=True)
    return run_tool(args, REPO, SHOWN, demo_env())


def demo_env() -> dict:
    """The tools' environment: one thread per process unless set (the model is tiny: as fast on
    a quiet machine, far faster on a busy one, and the same numbers whatever the core count)."""
    return {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seed', type=int, default=0, help='training seed (default: 0)')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.time()
    data_root = make_synthetic_ade20k(REPO / OUT / 'data')
    print(f'== data: {data_root.relative_to(REPO)} (procedural ADE20K layout, 5 classes)',
          flush=True)
    work_dir = OUT / 'work_dir'
    # --overwrite: each demo run trains anew (the previous run's checkpoints are set aside)
    run('train', ['tools/train.py', CONFIG, '--work-dir', str(work_dir), '--overwrite',
                  '--cfg-options', f'randomness.seed={args.seed}'])
    # relative to the repository (the tools' working folder): the same lines on every machine
    checkpoint = os.path.relpath((REPO / work_dir / 'last_checkpoint').read_text().strip(), REPO)
    output = run('test', ['tools/test.py', CONFIG, checkpoint, '--work-dir', str(work_dir)])
    # Paths relative to the repository (the tools' working folder): short figure titles.
    images = [path.relative_to(REPO)
              for path in sorted((data_root / 'images' / 'validation').glob('*.jpg'))[:3]]
    # --overwrite: each demo run redraws the pictures of the previous one
    run('pictures', ['tools/infer.py', CONFIG, checkpoint, *map(str, images),
                     '--gt', str(data_root.relative_to(REPO) / 'annotations' / 'validation'),
                     '--out-dir', str(OUT / 'pictures'), '--overwrite'])
    miou = re.findall(r'mIoU: ([\d.]+)', output)
    print(f'== done in {time.time() - start:.0f} s: test mIoU {miou[-1] if miou else "?"} '
          f'over 5 classes; pictures in {OUT / "pictures"}', flush=True)


if __name__ == '__main__':
    main()
