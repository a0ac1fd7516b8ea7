"""Every measured job runs in a fresh process (``python -m mmbixt.operations.benchmark --child
JOB``), so one job's memory and caches never reach the next."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from .attention import attention_case
from .common import REPO
from .deploy import deploy_case
from .forward import forward_group
from .profiles import profile_case
from .scaling import fit_case, scaling_group
from .segment import segment_group
from .train import train_case


def child_main(spec: str) -> None:
    job = json.loads(spec)
    import torch
    torch.set_num_threads(job['args']['threads'])
    runners = {'forward': lambda: forward_group(job['size'], job['stride'], job['args']),
               'attention': lambda: attention_case(job['case'], job['args']),
               'segment': lambda: segment_group(job['head'], job['size'], job['args']),
               'train': lambda: train_case(job['case'], job['args']),
               'scaling': lambda: scaling_group(job['size'], job['peers'], job['args']),
               'fits': lambda: fit_case(job['case'], job['args']),
               'profile': lambda: profile_case(job['case'], job.get('size')),
               'deploy': lambda: deploy_case(job['case'], job.get('size'), job['args'])}
    try:
        result = runners[job['kind']]()
    except Exception as exc:  # noqa: BLE001  (reported, the run goes on)
        result = {'error': f'{type(exc).__name__}: {exc}'[:300]}
    print('RESULT ' + json.dumps(result), flush=True)


def in_child(job: dict, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, '-m', __package__, '--child', json.dumps(job)],
                          capture_output=True, text=True, cwd=REPO, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[7:])
    return {'error': f'exit {proc.returncode}: {proc.stderr.strip()[-300:]}'}
