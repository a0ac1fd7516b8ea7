"""tools/gpu_check.py runs every part of its report as a dry run on the CPU (tiny sizes) and says
when no GPU was found; the GPU run itself needs a CUDA machine (`make gpu-check`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from conftest import REPO


def test_dry_run_reports_every_part(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'gpu_check.py'), '--dry-run',
                           '--out', str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / 'report.json').read_text())
    assert report['dry_run']
    if not torch.cuda.is_available():
        assert report['device'] == 'no GPU found'
        assert 'no GPU was found' in proc.stdout
    assert report['parity']['ok']
    for dtype in ('float16', 'bfloat16'):
        run = report['amp'][dtype]
        assert run['finite'] and run['falling'], run
    calls = report['sdpa']['float32']
    assert set(calls) == {'latents read tokens', 'tokens read latents', 'latent self-attention'}
    assert all(row['predicted'] == 'flash_cpu' and 'flash_attention_for_cpu' in row['ran']
               for row in calls.values())
    assert {row['model'] for row in report['throughput']} == {'BiXT-Ti/16', 'ViT-Ti/16 (mmseg)'}
    assert all(row['images_per_s'] > 0 for row in report['throughput'])
    assert report['ddp']['2 processes images/s'] > 0
    text = (tmp_path / 'report.md').read_text()
    for heading in ('## 1. Parity', '## 2. AMP', '## 3. Fused-attention kernel',
                    '## 4. Backbone forward throughput', '## 5. DDP'):
        assert heading in text
