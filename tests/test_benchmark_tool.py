"""tools/benchmark.py (the package mmbixt.operations.benchmark) works end to end (a smoke run with
tiny sizes, no timing assertions) and judges the issue-22 goals from its measurements as
documented."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mmbixt.operations import benchmark
from mmbixt.operations.benchmark import run as benchmark_run

from conftest import REPO


def test_quick_run_writes_tables_goals_and_the_scaling_plot(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'benchmark.py'), '--quick',
                           '--sections', 'forward', 'attention', 'segment', 'scaling',
                           '--threads', '1',
                           '--out', str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / 'results.json').read_text())
    times = results['forward'][0]['ms']
    assert {'matmul fp32 (mm)', 'mmbixt fp32', 'mmbixt fp32, two SDPA calls',
            'mmbixt fast path', 'mmseg ViT-Ti/16 fp32'} <= set(times)
    from mmbixt.compat import cpu_capability
    if cpu_capability().bf16:  # the bf16 peak is timed only where bf16 is native
        assert 'matmul bf16 (mm)' in times
    else:
        assert results['forward'][0]['skipped']['matmul bf16 (mm)'].startswith(
            f'not run: this CPU ({cpu_capability().label()}) has no native bf16')
    upernet = next(g for g in results['segment'] if g['head'] == 'upernet')
    assert {'BiXT-Ti/16 fp32', 'BiXT-Ti/16 fast path', 'BiXT-Ti/4 fast path',
            'ViT-Ti/16 fp32'} <= set(upernet['runs'])
    assert set(upernet['split']['fast path']) == {'backbone', 'neck', 'decode head'}
    assert [group['size'] for group in results['scaling']] == [32, 64, 96]
    assert all(set(group['runs']) == {'mmbixt BiXT-Ti/16', 'mmbixt BiXT-Ti/8', 'mmseg ViT-Ti/16'}
               for group in results['scaling'])
    table = (tmp_path / 'table.md').read_text()
    from mmbixt.compat import cpu_capability
    for title in ('Backbone forward', 'Bi-directional attention', 'Whole-image inference',
                  'Scaling', 'Goals'):
        assert f'{title} (CPU: {cpu_capability().label()}):' in table
    assert '| 1. fp32 BiXT-Ti/16 at 512 >= 1.3x the original | not measured | - |' in table
    assert '| where the time goes (BiXT-Ti/16, whole image) |' in table
    kernel = results['attention']['Ti/16:64']
    assert kernel['tokens'] == 16 and max(kernel['max_rel_diff'].values()) < 2e-2
    assert '| Ti/16 at 64 px, tiled kernel float32 | 16 |' in table
    assert '| 5. scaling: >= 6 sizes (256..2048) for BiXT-Ti/16, Ti/8 and ViT | 3 sizes | MISS |' \
        in table
    assert (tmp_path / 'scaling.png').stat().st_size > 0


def test_goals_pass_and_miss_by_the_issue_thresholds():
    peak = 2 * benchmark.PEAK_SIZE ** 3 / 1e9  # GFLOP of one peak matmul
    forward = [
        {'size': 512, 'stride': 16, 'gflop': 1.0, 'max_rel_diff': 2e-6,
         'ms': {'original fp32': 130.0, 'mmbixt fp32': 100.0, 'mmbixt fast path': 50.0,
                'mmbixt torch.compile fp32': 120.0, 'mmbixt torch.compile fast path': 40.0}},
        {'size': 1024, 'stride': 16, 'gflop': peak, 'max_rel_diff': 3e-6,
         'ms': {'matmul fp32 (mm)': 200.0, 'matmul fp32 (oneDNN)': 100.0,
                'original fp32': 300.0, 'original bf16 autocast': 140.0,
                'mmbixt fp32': 140.0, 'mmbixt fast path': 100.0}},
        {'size': 512, 'stride': 4, 'gflop': 1.0, 'ms': {'original fp32': 290.0,
                                                         'mmbixt fp32': 100.0}}]
    segment = [
        {'head': 'upernet', 'size': 512, 'agreement': 0.996,
         'runs': {'ViT-Ti/16 fp32': {'ms': 900.0}, 'BiXT-Ti/16 fast path': {'ms': 300.0}}},
        {'head': 'fpn', 'size': 512, 'agreement': 0.998,
         'runs': {'BiXT-Ti/16 fp32': {'ms': 200.0}, 'BiXT-Ti/16 fast path': {'ms': 80.0}}}]
    six = {size: {'ms': 1.0, 'peak_mb': 1.0} for size in benchmark.SCALING_SIZES[:6]}
    peers = ('mmbixt BiXT-Ti/16', 'mmbixt BiXT-Ti/8', 'mmseg ViT-Ti/16')
    scaling = [{'size': size, 'runs': dict.fromkeys(peers, run), 'skipped': {}}
               for size, run in six.items()]
    scaling.append({'size': 2048, 'runs': dict.fromkeys(peers[:2], six[256]),
                    'skipped': {'mmseg ViT-Ti/16': '> 20 GB'}})
    fits = {'BiXT-Ti/16:2048': {'peak_mb': 6 * 1024}, 'BiXT-Ti/8:1024': {'peak_mb': 17 * 1024},
            'ViT-Ti/16:2048': {'peak_mb': 9 * 1024}}
    results = dict(forward=forward, segment=segment, train={}, scaling=scaling, fits=fits)
    verdicts = {name: (value, ok) for name, value, ok in benchmark.targets(results)}
    assert verdicts['1. fp32 BiXT-Ti/16 at 512 >= 1.3x the original'] == ('1.30x', True)
    assert verdicts['1. fp32 BiXT-Ti/16 at 1024 >= 2.0x the original'] == ('2.14x', True)
    assert verdicts['1. fp32 BiXT-Ti/4 at 512 >= 3.0x the original'] == ('2.90x', False)
    assert verdicts['1. fast path (bf16) at 1024 >= 3x the original fp32'] == ('3.00x', True)
    assert verdicts['1. fast path (bf16) at 1024 >= 1.5x the original under bf16 autocast'] == (
        '1.40x', False)
    assert verdicts['1. same outputs as the original (12 layers, relative) <= 1e-5'] == (
        '3.0e-06', True)
    assert verdicts['2. fp32 BiXT-Ti/16 at 1024 >= 70% of the best fp32 matmul peak'] == (
        '71%', True)
    assert verdicts['3. torch.compile fp32 / eager fp32 (measured; < 1 = compile wins)'] == (
        '1.20', True)
    assert verdicts['3. torch.compile fast path / fast path (measured; < 1 = compile wins)'] == (
        '0.80', True)
    assert verdicts['4. UPerNet-BiXT-Ti/16 fast path >= 3x UPerNet-ViT-Ti/16 fp32 '
                    '(512, whole image)'] == ('3.00x', True)
    assert verdicts['4. Semantic FPN-BiXT-Ti/16 fast path >= 3x its fp32 (512, whole image)'] == (
        '2.50x', False)
    assert verdicts['4. fast path predictions agree with fp32 on >= 99.5% of pixels'] == (
        '99.60%', True)
    assert verdicts['5. scaling: >= 6 sizes (256..2048) for BiXT-Ti/16, Ti/8 and ViT'] == (
        '6 sizes', True)
    assert verdicts['5. UPerNet-BiXT-Ti/16 at 2048 whole-image inference within 16 GB'] == (
        '6.0 GB', True)
    assert verdicts['5. UPerNet-BiXT-Ti/8 at 1024 whole-image inference within 16 GB'] == (
        '17.0 GB', False)
    assert verdicts['5. UPerNet-ViT-Ti/16 at 2048 does not fit 16 GB'] == ('9.0 GB', False)
    gpu_goal = verdicts['6. CUDA parity, AMP steps, attention kernels, throughput, DDP']
    assert gpu_goal == ('`make gpu-check` on a GPU (docs/gpu.md)', None)  # never judged here


def test_vit_points_past_the_memory_limit_are_skipped_and_said_so(tmp_path):
    assert benchmark.vit_attention_gb(2048) < benchmark.VIT_LIMIT_GB < \
        benchmark.vit_attention_gb(4096)
    peers = [{'peer': 'mmseg ViT-Ti/16', 'points': {
        '256': {'ms': 10.0, 'peak_mb': 50.0}, '512': {'ms': 90.0, 'peak_mb': 400.0},
        '4096': {'skipped': 'attention alone 34 GB > 20 GB'}}}]
    assert '| mmseg ViT-Ti/16 | 4096 | skipped: attention alone 34 GB > 20 GB |' in \
        benchmark.scaling_table(peers)
    benchmark.plot(peers, tmp_path / 'plot.png', 'test')
    assert (tmp_path / 'plot.png').stat().st_size > 0


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


def test_a_stopped_run_keeps_its_results_and_resume_runs_only_the_rest(tmp_path, monkeypatch,
                                                                      capsys):
    measured = []

    def fake_child(job, threads):  # the children's protocol, without their minutes
        measured.append(job['case'])
        return {'error': 'stopped'} if job['case'].startswith('ViT') and len(measured) < 4 \
            else {'ms': 1.0, 'peak_mb': float(len(measured))}
    monkeypatch.setattr(benchmark_run, 'in_child', fake_child)
    arguments = ['--quick', '--threads', '1', '--out', str(tmp_path), '--sections', 'fits']
    benchmark.main(arguments)
    first = json.loads((tmp_path / 'results.json').read_text())
    assert measured == ['BiXT-Ti/16:128', 'BiXT-Ti/8:64', 'ViT-Ti/16:128']
    assert set(first['done']) == {'BiXT-Ti/16:128', 'BiXT-Ti/8:64'}  # not the failed one
    benchmark.main(arguments + ['--resume'])
    assert measured[3:] == ['ViT-Ti/16:128']
    assert 'kept from the earlier run' in capsys.readouterr().out
    second = json.loads((tmp_path / 'results.json').read_text())
    assert second['fits']['BiXT-Ti/8:64'] == first['fits']['BiXT-Ti/8:64']
    assert second['fits']['ViT-Ti/16:128'] == {'ms': 1.0, 'peak_mb': 4.0}
    assert '| UPerNet-ViT-Ti/16, 128 px | 1 | 4 |' in (tmp_path / 'table.md').read_text()
    (tmp_path / 'results.json').write_text(json.dumps({'machine': 'another machine'}))
    with pytest.raises(SystemExit, match='was measured as "another machine"'):
        benchmark.main(arguments + ['--resume'])


def test_profiles_name_the_ops_where_the_time_goes():
    cases = {case: benchmark.profile_case(case, size=32)
             for case in ('BiXT-Ti/4 backbone, fp32', 'UPerNet-BiXT-Ti/16 whole image, fast path')}
    for result in cases.values():
        assert result['size'] == 32 and len(result['ops']) == benchmark.PROFILE_TOP + 1
        assert result['ops'][-1][0] == '(all other ops)'
        assert abs(sum(share for _, _, share in result['ops']) - 1) < 1e-6
    backbone_ops = {name for name, _, _ in cases['BiXT-Ti/4 backbone, fp32']['ops']}
    assert backbone_ops & {'mkldnn::_linear_pointwise', 'aten::addmm'}
    table = benchmark.profile_table(cases)
    assert '| BiXT-Ti/4 backbone, fp32, 32 px | (whole call, unprofiled) |' in table


def test_the_masks_section_runs():
    lines = benchmark.masks_report(rounds=1, quick=True)
    assert len(lines) == 3 and lines[-1].startswith('batched test, 4 mixed sizes')


def test_a_peer_that_cannot_run_here_is_reported_and_the_rest_is_timed(capsys):
    """As oneDNN's bf16 linear on a CPU without bf16: its error's first line goes to the table,
    the group's other peers are timed."""
    from mmbixt.operations.benchmark.measure import interleaved, runnable
    from mmbixt.operations.benchmark.tables import forward_table

    def no_kernel():
        raise RuntimeError('could not create a primitive descriptor for the inner product '
                           'forward propagation primitive.\nRun with ONEDNN_VERBOSE=all')
    functions, skipped = runnable({'fine': lambda: None, 'matmul bf16 (oneDNN)': no_kernel})
    assert list(functions) == ['fine']
    assert skipped == {'matmul bf16 (oneDNN)': 'cannot run on this CPU: RuntimeError: could not '
                       'create a primitive descriptor for the inner product forward propagation '
                       'primitive.'}
    group = {'size': 64, 'stride': 16, 'gflop': 1.0, 'ms': interleaved(functions, 1),
             'skipped': skipped}
    assert ('| 64 px, Ti/16 | matmul bf16 (oneDNN) | cannot run on this CPU: RuntimeError: could '
            'not create a primitive descriptor') in forward_table([group])


def test_issue30_goals_name_the_capability_and_judge_by_the_thresholds():
    forward = [{'size': 512, 'stride': 16, 'ms': {'original fp32': 140.0, 'mmbixt fp32': 100.0,
                                                  'mmbixt fast path': 90.0}},
               {'size': 1024, 'stride': 16, 'ms': {'original fp32': 290.0, 'mmbixt fp32': 200.0,
                                                   'mmbixt fast path': 210.0}},
               {'size': 512, 'stride': 4, 'ms': {'original fp32': 3100.0, 'mmbixt fp32': 1000.0}}]
    attention = {'Ti/16:1024': {'ms': {'two SDPA calls float32': 5.0, 'tiled kernel float32': 2.0}},
                 'Ti/4:512': {'ms': {'two SDPA calls float32': 20.0, 'tiled kernel float32': 11.0}}}
    segment = [{'head': 'upernet', 'size': 512, 'agreement': 0.97, 'runs': {}},
               {'head': 'fpn', 'size': 512, 'postprocess': {'ms': 10.0, 'call_ms': 100.0},
                'runs': {'BiXT-Ti/16 fp32': {'ms': 300.0}, 'BiXT-Ti/16 fast path': {'ms': 100.0}}}]
    deploy = {'agreement': {'fast_path': 0.999, 'int8': 0.994},
              'int8 speed': {'ms': {'UPerNet-ViT-Ti/16 fp32, PyTorch': 1200.0,
                                    'UPerNet-BiXT-Ti/16 int8, ONNX Runtime': 500.0}}}
    results = dict(forward=forward, attention=attention, segment=segment, deploy=deploy,
                   machine='2-core CPU (AVX2, bf16: none), 2 threads, torch 2.x')
    verdicts = {name: (value, ok) for name, value, ok in benchmark.targets(results)}
    tag = ' [AVX2, bf16: none]'
    assert verdicts['30.0 AVX2 path: fp32 BiXT-Ti/16 at 512 >= 1.3x the original' + tag] == (
        '1.40x', True)
    assert verdicts['30.0 AVX2 path: fp32 BiXT-Ti/16 at 1024 >= 1.5x the original' + tag] == (
        '1.45x', False)
    assert verdicts['30.0 fast path never slower than fp32 (backbone; worst fast/fp32 time)'
                    + tag] == ('1.05', False)
    assert verdicts['30.1 Semantic FPN-BiXT-Ti/16 fast path >= 2.5x its fp32 with mmseg '
                    'post-processing (512, whole image)' + tag] == ('3.00x', True)
    assert verdicts['30.1 post-processing < 15% of the Semantic FPN fast-path call (512)'
                    + tag] == ('10%', True)
    assert verdicts['30.2 int8 ONNX Runtime labels = fp32 PyTorch on >= 99.5% of pixels '
                    '(trained demo model)' + tag] == ('99.40%', False)
    assert verdicts['30.2 UPerNet-BiXT-Ti/16 int8 in ONNX Runtime >= 3x UPerNet-ViT-Ti/16 fp32 '
                    'PyTorch (512, whole image)' + tag] == ('2.40x', False)
    assert verdicts['30.3 fast path labels = fp32 on >= 99.5% of pixels, trained demo model '
                    '(random weights, 150 classes: 97.00%)' + tag] == ('99.90%', True)
    assert verdicts['30.4 tiled attention kernel >= 2x the GFLOP/s of two SDPA calls, fp32, '
                    'BiXT-Ti/16 at 1024' + tag] == ('2.50x', True)
    assert verdicts['30.4 tiled attention kernel >= 2x the GFLOP/s of two SDPA calls, fp32, '
                    'BiXT-Ti/4 at 512' + tag] == ('1.82x', False)
    assert verdicts['30.4 fp32 BiXT-Ti/4 at 512 >= 3x the original' + tag] == ('3.10x', True)
    avx512 = dict(results, machine='2-core CPU (AVX512, bf16: avx512_bf16), 2 threads')
    verdicts = {name: (value, ok) for name, value, ok in benchmark.targets(avx512)}
    assert verdicts['30.0 AVX2 path: fp32 BiXT-Ti/16 at 512 >= 1.3x the original'
                    ' [AVX512, bf16: avx512_bf16]'][1] is None  # judged on an AVX2 run only
