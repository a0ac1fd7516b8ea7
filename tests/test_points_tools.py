"""Train -> test of the point segmentor through tools/train.py and tools/test.py (subprocesses)."""
import os
import re
import subprocess
import sys
from pathlib import Path

from mmbixt.datasets.synthetic_shapes import make_synthetic_shapenetpart

REPO = Path(__file__).resolve().parents[1]
CONFIG = 'configs/bixt/demo_partseg_bixt.py'


def run(args, env):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_train_then_test_through_the_tools(tmp_path):
    root = make_synthetic_shapenetpart(str(tmp_path / 'shapes'), {'train': 2, 'val': 1, 'test': 2},
                                       categories=('Mug', 'Table'), points_per_shape=300)
    work_dir = tmp_path / 'work'
    options = [f'{loader}.dataset.data_root={root}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    train_log = run(['tools/train.py', CONFIG, '--work-dir', str(work_dir), '--cfg-options',
                     *options, 'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
                     'default_hooks.checkpoint.interval=4', 'default_hooks.logger.interval=2'],
                    env)
    assert re.search(r'Iter\(train\) \[4/4\]', train_log)
    checkpoint = work_dir / 'iter_4.pth'
    assert checkpoint.is_file()
    test_log = run(['tools/test.py', CONFIG, str(checkpoint), '--work-dir', str(work_dir),
                    '--cfg-options', *options], env)
    found = re.search(r'Iter\(test\).*ins_mIoU: ([\d.]+)\s+cls_mIoU: ([\d.]+)', test_log)
    assert found, test_log[-2000:]
    ins, cls = float(found.group(1)), float(found.group(2))
    assert 0 < ins <= 100 and 0 < cls <= 100
    assert 'Mug' in test_log and 'Table' in test_log  # the per-category table
    refused = subprocess.run([sys.executable, 'tools/test.py', CONFIG, str(checkpoint), '--out',
                              str(tmp_path / 'maps'), '--cfg-options', *options], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and 'does not evaluate images' in refused.stderr
    assert 'Traceback' not in refused.stderr
