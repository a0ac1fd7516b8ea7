"""tools/benchmark.py works end to end (a smoke run with tiny sizes, no timing assertions) and
judges the issue-14 targets from its measurements as documented."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / 'tools'))
import benchmark  # noqa: E402


def test_quick_forward_run_writes_table_and_targets(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'benchmark.py'), '--quick',
                           '--no-train', '--threads', '1', '--out', str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / 'results.json').read_text())
    times = results['forward'][0]['ms']
    assert {'matmul fp32 (mm)', 'mmbixt fp32', 'mmbixt fast path',
            'mmseg ViT-Ti/16 fp32'} <= set(times)
    table = (tmp_path / 'table.md').read_text()
    assert '| fp32 BiXT-Ti/16 at 64 >= 80% of the fp32 matmul peak |' in table
    assert 'the original | not measured | - |' in table  # no --original given
    assert (tmp_path / 'scaling.png').stat().st_size > 0


def test_targets_pass_and_miss_by_the_issue_thresholds():
    peak = 2 * benchmark.PEAK_SIZE ** 3 / 1e9  # GFLOP of one peak matmul
    forward = [{'size': 1024, 'stride': 16, 'gflop': peak, 'max_rel_diff': 2e-6,
                'ms': {'matmul fp32 (mm)': 200.0, 'matmul fp32 (oneDNN)': 100.0,
                       'original fp32': 300.0, 'original bf16 autocast': 140.0,
                       'mmbixt fp32': 120.0, 'mmbixt fast path': 100.0,
                       'mmseg ViT-Ti/16 fp32': 1400.0}}]
    train = {'agreement': {'agreement': 0.996},
             'upernet:bixt:4:4096': {'ms': 130.0}, 'upernet:bixt:4:0': {'ms': 100.0}}
    verdicts = {name: (value, ok) for name, value, ok in benchmark.targets(forward, train)}
    assert verdicts['fp32 BiXT-Ti/16 at 1024 >= 80% of the fp32 matmul peak'] == ('83%', True)
    assert verdicts['fp32 BiXT-Ti/16 at 1024 >= 1.5x the original'] == ('2.50x', True)
    assert verdicts['ViT-Ti/16 / BiXT-Ti/16 at 1024 >= 12'] == ('11.7', False)
    assert verdicts['fast path at 1024 >= 2x the original fp32'] == ('3.00x', True)
    assert verdicts['fast path at 1024 >= 1.3x the original under bf16 autocast'] == ('1.40x', True)
    assert verdicts['chunked training step <= 1.2x unchunked (UPerNet-BiXT-Ti/4)'] == ('1.30x', False)
    assert verdicts['fp32 BiXT-Ti/16 at 512 >= 1.3x the original'] == ('not measured', None)


def test_the_original_timm_fork_loads_under_its_own_name_beside_the_installed_timm(tmp_path):
    import timm
    fork = tmp_path / 'BiXT' / 'timm'
    for folder, text in {'': 'from . import layers, models\n',
                         'layers': 'class PatchEmbed: pass\nclass PatchEmbedHalfStride: pass\n'
                                   'class PatchEmbedQuarterStride: pass\n',
                         'models': ''}.items():
        (fork / folder).mkdir(parents=True, exist_ok=True)
        (fork / folder / '__init__.py').write_text(text)
    (fork / 'models' / 'bixt.py').write_text(
        'from timm.layers import PatchEmbed\n\nclass BiXT:\n    embed = PatchEmbed\n')
    installed = {name: module for name, module in sys.modules.items()
                 if name == 'timm' or name.startswith('timm.')}
    BiXT, embeds = benchmark.load_original(str(tmp_path / 'BiXT'))
    assert BiXT.embed is embeds[16] and embeds[16].__module__ == 'timm.layers'  # the fork's own
    assert sys.modules['bixt_original_timm.models.bixt'].BiXT is BiXT
    assert {name: module for name, module in sys.modules.items()
            if name == 'timm' or name.startswith('timm.')} == installed  # untouched
    assert sys.modules['timm'] is timm and str(tmp_path) not in ' '.join(sys.path)
