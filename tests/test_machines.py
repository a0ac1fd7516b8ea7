"""The simulated machines (issue 26): the hardware-sensitive paths run as this machine is, capped
at AVX2 without bf16 (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``, as an AVX2 x86 CPU),
and on ATen's portable kernels with every fused path off (``ATEN_CPU_CAPABILITY=default
MMBIXT_FUSED_KERNELS=0``, as an ARM or any other CPU), each in a fresh process since the caps act
when torch is imported. Each gives the same outputs within the documented tolerance (fp32: 1e-5
relative; bf16: 5e-2 relative, 99% of pixels the same class). A cap this CPU cannot take (not x86,
no AVX2) is skipped with the reason.

The fast suite runs one small probe per machine (tests/machine_probe.py: a small segmentor through
every CPU path, the fused linears) and the hardware-sensitive test files themselves (the
benchmark's quick run and ONNX verification among them) under each cap; marked slow, a point-demo
smoke run on each machine."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO

CAPS = ('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA', 'ATEN_CPU_CAPABILITY', 'MMBIXT_FUSED_KERNELS',
        'MMBIXT_FUSED_ATTENTION')
MACHINES = {
    'as is': {},
    'AVX2 without bf16': {'ONEDNN_MAX_CPU_ISA': 'AVX2', 'ATEN_CPU_CAPABILITY': 'avx2'},
    'portable': {'ATEN_CPU_CAPABILITY': 'default', 'MMBIXT_FUSED_KERNELS': '0'},
}
FP32_TOLERANCE, BF16_TOLERANCE, BF16_AGREEMENT = 1e-5, 5e-2, 0.99


def machine_env(machine: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CAPS}
    return dict(env, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', **MACHINES[machine])


@pytest.fixture(scope='module')
def probes(tmp_path_factory) -> dict:
    """Each machine's probe (tests/machine_probe.py), the three processes side by side."""
    folder = tmp_path_factory.mktemp('machines')
    # The attention kernel (the default where fused paths are on) compiles once per capability
    # and is cached: the AVX2 probe builds the AVX2 one.
    running = {machine: subprocess.Popen(
        [sys.executable, str(REPO / 'tests' / 'machine_probe.py'), str(folder / f'{i}.pt')]
        + (['--kernel'] if machine == 'as is' else []),
        env=machine_env(machine), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i, machine in enumerate(MACHINES)}
    results = {}
    for i, (machine, proc) in enumerate(running.items()):
        output = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, f'{machine}: exit {proc.returncode}\n{output[-3000:]}'
        results[machine] = torch.load(folder / f'{i}.pt', weights_only=True)
    return results


def applies(probes: dict, machine: str) -> dict:
    """The probe of ``machine``; skipped with the reason where this CPU cannot be capped so."""
    probe = probes[machine]
    aten = probe['capability']['aten']
    if machine == 'AVX2 without bf16' and aten != 'AVX2':
        pytest.skip(f'this CPU cannot run as AVX2 x86 (ATen reports {aten} under the cap)')
    if machine == 'portable' and aten != 'DEFAULT':
        pytest.skip(f'ATen did not take its portable kernels (it reports {aten})')
    return probe


def kernel_builds() -> bool:
    from mmbixt.models.core.bidir_attention import load_kernel
    return load_kernel() is not None


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


@pytest.mark.parametrize('machine', list(MACHINES))
def test_each_machine_takes_the_paths_its_capability_allows(probes, machine):
    probe = applies(probes, machine)
    capability, paths = probe['capability'], probe['paths']
    if machine == 'AVX2 without bf16':  # the machine: oneDNN has no bf16 kernel there
        assert not capability['bf16'] and not capability['amx']
        assert paths['fused linear fp32'] == capability['onednn']
    if machine == 'portable':
        assert not any(paths[p] for p in ('fused linear fp32', 'fused linear bf16',
                                          'attention kernel', 'channels-last')), paths
    else:
        assert paths['channels-last']
    # bf16 (fused linear, fast path) only where native
    assert paths['attention kernel'] == (machine == 'as is' and kernel_builds())
    assert paths['fast path bf16'] == capability['bf16']
    assert not paths['fused linear bf16'] or capability['bf16']
    assert ('bf16 autocast' in probe['outputs']) == capability['bf16']


@pytest.mark.parametrize('machine', list(MACHINES))
def test_each_path_gives_the_plain_fp32_result(probes, machine):
    outputs = applies(probes, machine)['outputs']
    plain = outputs['plain fp32']
    for name in ('fused fp32', 'attention kernel fp32'):
        if name in outputs:
            assert relative(outputs[name], plain) <= FP32_TOLERANCE, name
    assert relative(outputs['linear+residual'], outputs['plain linear+residual']) <= FP32_TOLERANCE
    for name in ('fast path', 'bf16 autocast'):
        if name not in outputs:
            continue
        error, same = relative(outputs[name], plain), (
            outputs[name].argmax(1) == plain.argmax(1)).float().mean().item()
        bf16 = probes[machine]['paths']['fast path bf16'] or name == 'bf16 autocast'
        if bf16:
            assert error <= BF16_TOLERANCE and same >= BF16_AGREEMENT, (name, error, same)
        else:
            assert error <= FP32_TOLERANCE, (name, error)


@pytest.mark.parametrize('machine', [m for m in MACHINES if m != 'as is'])
def test_the_machines_agree_with_this_one(probes, machine):
    outputs, here = applies(probes, machine)['outputs'], probes['as is']['outputs']
    for name in ('plain fp32', 'fused fp32', 'linear', 'linear+gelu', 'linear+residual'):
        assert relative(outputs[name], here[name]) <= FP32_TOLERANCE, name


# ----------------------------------------------------------------------------- the full matrix
HARDWARE_SENSITIVE = [
    'tests/test_compat.py', 'tests/test_fast_inference.py', 'tests/test_core_fast_paths.py',
    'tests/test_bidir_attention.py', 'tests/test_precision.py', 'tests/test_half_precision.py',
    'tests/test_token_masks.py::test_bf16_autocast_with_masks',
    'tests/test_benchmark_tool.py::test_quick_run_writes_tables_goals_and_the_scaling_plot',
    'tests/test_export_onnx.py::test_export_tool_verify_passes',
    'tests/test_bad_input_images.py::test_amp_runs_under_autocast',
]


@pytest.fixture(scope='module')
def capped_runs(probes) -> dict:
    """The hardware-sensitive files under each cap this CPU can take, the runs side by side (each
    one thread): machine -> (exit status, output), or the reason it was skipped."""
    running, skipped = {}, {}
    for machine in MACHINES:
        if machine == 'as is':
            continue
        try:
            applies(probes, machine)
        except pytest.skip.Exception as reason:
            skipped[machine] = str(reason)
            continue
        running[machine] = subprocess.Popen(
            [sys.executable, '-m', 'pytest', '-q', '-x', '-m', 'not slow', '-p', 'no:cacheprovider',
             *HARDWARE_SENSITIVE], cwd=REPO, env=machine_env(machine), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
    done = {}
    for machine, proc in running.items():
        output = proc.communicate(timeout=3600)[0]
        done[machine] = (proc.returncode, output)
    return {**done, **skipped}


@pytest.mark.parametrize('machine', [m for m in MACHINES if m != 'as is'])
def test_hardware_sensitive_tests_pass_on_each_machine(capped_runs, machine):
    run = capped_runs[machine]
    if isinstance(run, str):
        pytest.skip(run)
    returncode, output = run
    assert returncode == 0, output[-6000:]


@pytest.mark.slow
@pytest.mark.parametrize('machine', list(MACHINES))
def test_the_point_demo_runs_on_each_machine(probes, machine, tmp_path):
    applies(probes, machine)
    proc = subprocess.run([sys.executable, 'tools/demo_points.py', '--iters', '4',
                           '--out', str(tmp_path)], cwd=REPO, env=machine_env(machine),
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert 'mIoU' in proc.stdout, proc.stdout[-2000:]
