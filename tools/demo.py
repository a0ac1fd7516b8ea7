"""`make demo`: train, test and draw a small BiXT segmenter on procedural ADE20K-layout scenes.

Writes everything under demo_output/: data/ (generated once, then reused), work_dir/ (logs and
checkpoints), pictures/ (one figure per validation image: input, prediction, ground truth, classes,
where the latents look). Runs on a CPU in a few minutes.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmbixt.datasets import make_synthetic_ade20k  # noqa: E402

CONFIG = 'configs/bixt/demo_upernet_bixt_ti.py'
OUT = Path('demo_output')
SHOWN = re.compile(r'Iter\(|mIoU: |^[|+]|Error|error:|^\S+ -> ')


def run(step: str, args: list[str]) -> str:
    """Runs a tool, echoing its progress lines; returns its whole output."""
    print(f'== {step}: {" ".join(args)}', flush=True)
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        shown = SHOWN.search(line)
        if shown:
            print('   ' + line[shown.start():].rstrip()[:160], flush=True)
    if proc.wait():
        sys.exit(f'{step} failed (exit {proc.returncode}):\n' + ''.join(lines[-30:]))
    return ''.join(lines)


def main() -> None:
    start = time.time()
    data_root = make_synthetic_ade20k(REPO / OUT / 'data')
    print(f'== data: {data_root} (procedural ADE20K layout, 5 classes)', flush=True)
    work_dir = OUT / 'work_dir'
    # --overwrite: each demo run trains anew (the previous run's checkpoints are set aside)
    run('train', ['tools/train.py', CONFIG, '--work-dir', str(work_dir), '--overwrite'])
    checkpoint = (REPO / work_dir / 'last_checkpoint').read_text().strip()
    output = run('test', ['tools/test.py', CONFIG, checkpoint, '--work-dir', str(work_dir)])
    # Paths relative to the repository (the tools' working folder): short figure titles.
    images = [path.relative_to(REPO)
              for path in sorted((data_root / 'images' / 'validation').glob('*.jpg'))[:3]]
    run('pictures', ['tools/infer.py', CONFIG, checkpoint, *map(str, images),
                     '--gt', str(data_root.relative_to(REPO) / 'annotations' / 'validation'),
                     '--out-dir', str(OUT / 'pictures')])
    miou = re.findall(r'mIoU: ([\d.]+)', output)
    print(f'== done in {time.time() - start:.0f} s: test mIoU {miou[-1] if miou else "?"} '
          f'over 5 classes; pictures in {OUT / "pictures"}', flush=True)


if __name__ == '__main__':
    main()
