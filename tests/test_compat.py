"""The one door to third-party internals (mmbixt/compat.py): nothing else in mmbixt or tools uses a
private name of torch, numpy, mmengine or timm, the door's guards fall back or accept as they should,
and the package metadata agrees with the tested pins."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mmbixt import compat

REPO = Path(__file__).resolve().parents[1]
GUARDED = ('torch', 'numpy', 'mmengine', 'timm')  # packages whose private names are guarded
DOOR = REPO / 'mmbixt' / 'compat.py'


def _is_private(part: str) -> bool:
    return part.startswith('_') and not part.startswith('__')


def _chain(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``numpy._core.multiarray`` for ``np._core.multiarray`` when ``np`` imports numpy."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return '.'.join([aliases[node.id], *reversed(parts)])


def private_uses(path: Path) -> list[tuple[str, str]]:
    """``(where, dotted name)`` of each private name of a ``GUARDED`` package that ``path``
    imports or reaches through an attribute of an imported name."""
    tree = ast.parse(path.read_text(), str(path))
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = (node.module or '') if isinstance(node, ast.ImportFrom) else ''
            for alias in node.names:
                full = f'{module}.{alias.name}' if module else alias.name
                if full.split('.')[0] not in GUARDED:
                    continue
                if any(map(_is_private, full.split('.'))):
                    found.append((f'{path.name}:{node.lineno}', full))
                if alias.asname or module:
                    aliases[alias.asname or alias.name] = full
                else:
                    aliases[full.split('.')[0]] = full.split('.')[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            name = _chain(node, aliases)
            if name is not None:
                found.append((f'{path.name}:{node.lineno}', name))
    return found


def unexpected_private_uses(paths: list[Path]) -> list[str]:
    """Private uses outside the door, or in the door but not on its allow-list."""
    bad = []
    for path in paths:
        for where, name in private_uses(path):
            allowed = path == DOOR and any(listed == name or listed.startswith(name + '.')
                                           for listed in compat.PRIVATE_NAMES)
            if not allowed:
                bad.append(f'{where} {name}')
    return bad


def test_private_names_of_torch_numpy_mmengine_and_timm_go_through_the_door_only():
    sources = sorted((REPO / 'mmbixt').rglob('*.py')) + sorted((REPO / 'tools').glob('*.py'))
    bad = unexpected_private_uses(sources)
    assert not bad, 'private third-party names outside the allow-list: ' + '; '.join(bad)
    uses = {name for _, name in private_uses(DOOR)}
    assert 'torch.ops.mkldnn._linear_pointwise' in uses  # the check sees the door's own uses


def test_the_private_use_check_can_fail(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text('import numpy as np\nimport torch\nfrom mmengine.runner import checkpoint as c\n'
                   'from mmengine.runner.checkpoint import _load_checkpoint\n'
                   'np._core.multiarray._reconstruct\ntorch.ops.mkldnn._linear_pointwise\n'
                   'c.CheckpointLoader._schemes\n')
    names = sorted(name for _, name in private_uses(bad))
    assert 'mmengine.runner.checkpoint._load_checkpoint' in names
    assert 'mmengine.runner.checkpoint.CheckpointLoader._schemes' in names
    assert 'numpy._core.multiarray._reconstruct' in names
    assert len(unexpected_private_uses([bad])) == len(names)  # only compat.py may use them


@pytest.fixture
def fresh_verdicts():
    """Self-tests decided anew in the test, and again afterwards."""
    compat.forget_self_tests()
    yield
    compat.forget_self_tests()


def test_the_onednn_op_falls_back_for_good_on_an_error_or_a_mismatch(monkeypatch, fresh_verdicts,
                                                                    caplog_mmengine):
    monkeypatch.setattr(compat, '_onednn_mismatch', lambda op, dtype: 'linear differs from F.linear')
    assert compat.onednn_linear() is None
    monkeypatch.setattr(compat, '_onednn_mismatch', lambda op, dtype: None)
    assert compat.onednn_linear() is None  # checked once: the verdict stays
    assert caplog_mmengine() == ['oneDNN fused linear (fp32) disabled (linear differs from '
                                 'F.linear); inference uses F.linear']

    def broken(op, dtype):
        raise RuntimeError('could not create a primitive descriptor\nmore detail')
    compat.forget_self_tests()
    monkeypatch.setattr(compat, '_onednn_mismatch', broken)
    assert compat.onednn_linear() is None
    assert caplog_mmengine()[-1] == ('oneDNN fused linear (fp32) disabled (RuntimeError: could '
                                     'not create a primitive descriptor); inference uses F.linear')


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason='no oneDNN in this torch')
def test_the_onednn_op_of_this_torch_agrees_with_f_linear(fresh_verdicts):
    assert compat._onednn_mismatch(compat.by_overload(torch.ops.mkldnn._linear_pointwise)) is None
    assert compat.onednn_linear() is not None


def test_the_bf16_onednn_op_is_offered_only_with_native_bf16(monkeypatch, fresh_verdicts,
                                                            caplog_mmengine):
    without = compat.CpuCapability(aten='AVX2', onednn=True, bf16=False, amx=False)
    monkeypatch.setattr(compat, 'cpu_capability', lambda: without)
    assert compat.onednn_linear(torch.bfloat16) is None
    assert compat.onednn_linear(torch.float16) is None
    assert caplog_mmengine() == []  # not offered here: nothing to warn about


@pytest.mark.skipif(not compat.cpu_capability().bf16,
                    reason=f'this CPU ({compat.cpu_capability().label()}) has no native bf16')
def test_the_bf16_onednn_op_agrees_with_f_linear_where_bf16_is_native(fresh_verdicts):
    op = compat.onednn_linear(torch.bfloat16)
    assert op is not None
    assert compat._onednn_mismatch(op, dtype=torch.bfloat16) is None


def test_a_fast_path_that_fails_in_use_is_given_up_once(fresh_verdicts, caplog_mmengine):
    assert compat.self_tested('a path', lambda: 'fast', lambda path: None, 'plain') == 'fast'
    for _ in range(2):
        compat.give_up('a path', RuntimeError('boom'), 'the plain op serves')
    assert compat.self_tested('a path', lambda: 'fast', lambda path: None, 'plain') is None
    assert caplog_mmengine() == ['a path disabled after an error in use (RuntimeError: boom); '
                                 'the plain op serves']


def test_cpu_capability_comes_from_the_libraries_not_proc_cpuinfo(monkeypatch):
    import builtins
    real_open = builtins.open

    def no_cpuinfo(path, *args, **kwargs):
        assert 'cpuinfo' not in str(path), 'the capability read /proc/cpuinfo'
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(builtins, 'open', no_cpuinfo)
    compat.cpu_capability.cache_clear()
    try:
        capability = compat.cpu_capability()
    finally:
        compat.cpu_capability.cache_clear()
    assert capability.aten == torch.backends.cpu.get_cpu_capability()
    assert capability.onednn == torch.backends.mkldnn.is_available()
    assert capability.bf16 == (capability.onednn
                               and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    assert not capability.amx or capability.bf16


def test_cpu_capability_refuses_bf16_that_does_not_run(monkeypatch):
    """oneDNN's word is not enough: a bf16 linear that fails (or is wrong) means no bf16."""
    monkeypatch.setattr(compat, '_onednn_reports_bf16', lambda: True)
    monkeypatch.setattr(compat, '_linear_operands', lambda dtype: 1 / 0)
    compat.cpu_capability.cache_clear()
    try:
        assert not compat.cpu_capability().bf16 and not compat.cpu_capability().amx
    finally:
        compat.cpu_capability.cache_clear()


@pytest.mark.parametrize('fields, label', [
    (dict(aten='AVX512', onednn=True, bf16=True, amx=False), 'AVX512 + bf16'),
    (dict(aten='AVX512', onednn=True, bf16=True, amx=True), 'AVX512 + AMX bf16'),
    (dict(aten='AVX2', onednn=True, bf16=False, amx=False), 'AVX2'),
    (dict(aten='DEFAULT', onednn=False, bf16=False, amx=False), 'DEFAULT + no oneDNN'),
])
def test_cpu_capability_labels(fields, label):
    assert compat.CpuCapability(**fields).label() == label


@pytest.mark.parametrize('major', [1, 2])
def test_numpy_arrays_in_a_checkpoint_read_under_numpy_1_and_2(tmp_path, monkeypatch, major):
    """Under numpy 1.x the reconstruct function lives in numpy.core: a good file must not be
    called damaged; files written by either numpy name either module."""
    from mmbixt.checkpoint import read_checkpoint
    from mmbixt.checkpoint.reader import safe_globals
    import numpy.core  # noqa: F401  (what numpy 1.x has; numpy 2 keeps it as a shim)
    monkeypatch.setattr(compat, 'numpy_major', lambda: major)
    safe_globals.cache_clear()
    try:
        path = tmp_path / 'with_numpy.pth'
        torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': {'arr': np.arange(3),
                                                                 'x': np.float64(2.5)}}, path)
        meta = read_checkpoint(path)['meta']
        assert meta['arr'].tolist() == [0, 1, 2] and meta['x'] == 2.5
        names = {name for _, name in compat.numpy_pickle_globals()}
        assert {'numpy.core.multiarray._reconstruct', 'numpy._core.multiarray._reconstruct'} <= names
    finally:
        safe_globals.cache_clear()


def test_remote_schemes_come_from_mmengines_backend_registry():
    from mmengine.fileio.backends import prefix_to_backends
    assert set(compat.remote_checkpoint_schemes()) == {p for p in prefix_to_backends if p}
    assert {'http', 'https'} <= set(compat.remote_checkpoint_schemes())


def _requirement_names(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split('#', 1)[0].strip()
        if line:
            name = re.split(r'[<>=!~\[ ]', line, maxsplit=1)[0].lower()
            pins[name] = line
    return pins


def test_setup_requirements_agree_with_requirements_runtime():
    setup_py = (REPO / 'setup.py').read_text()
    install_requires = re.search(r'install_requires=(\[.*?\])', setup_py, re.S).group(1)
    declared = _requirement_names(ast.literal_eval(install_requires))
    pinned = _requirement_names((REPO / 'requirements' / 'runtime.txt').read_text().splitlines())
    assert declared == pinned


def test_pytest_ini_filters_warnings_narrowly():
    ini = (REPO / 'pytest.ini').read_text()
    for blanket in ('ignore::DeprecationWarning\n', 'ignore::FutureWarning\n'):
        assert blanket not in ini + '\n', f'pytest.ini hides every {blanket.split("::")[1]}'


def test_the_reference_data_script_explains_itself_and_refuses_a_missing_clone(tmp_path):
    import subprocess
    import sys
    script = REPO / 'tests' / 'make_reference_data.py'
    shown = subprocess.run([sys.executable, str(script), '--help'], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and '--original' in shown.stdout
    missing = tmp_path / 'no_clone'
    refused = subprocess.run([sys.executable, str(script), '--original', str(missing),
                              '--out', str(tmp_path / 'out')], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and not (tmp_path / 'out').exists()
    assert refused.stderr.strip() == (
        f'error: --original {missing} is not a clone of the original BiXT repository (no '
        'timm/models/bixt.py). Clone it: git clone https://github.com/mrkshllr/BiXT')


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason='no oneDNN in this torch')
def test_the_onednn_op_never_formats_its_arguments(monkeypatch):
    # Calling the op packet resolves overloads by trying them: the rejected one's message holds a
    # full repr of every tensor argument, which cost about 40% of a 512 px fp32 forward.
    fused = compat.by_overload(torch.ops.mkldnn._linear_pointwise)

    def no_repr(self, *args, **kwargs):
        raise AssertionError('a tensor was formatted on the fused linear path')
    monkeypatch.setattr(torch.Tensor, '__repr__', no_repr)
    x, residual = torch.randn(3, 16), torch.randn(3, 8)
    weight, bias = torch.nn.Parameter(torch.randn(8, 16)), torch.nn.Parameter(torch.randn(8))
    with torch.no_grad():
        plain = fused(x, weight, bias, 'none', [], 'none')
        added = fused(x, residual, weight, bias, 'add')
    torch.testing.assert_close(added, plain + residual)


def test_a_torch_without_onednn_runs_the_plain_ops(monkeypatch, fresh_verdicts, caplog_mmengine):
    """As on a CPU build without oneDNN (some ARM wheels): no capability claimed, no fused op."""
    monkeypatch.setattr(torch.backends.mkldnn, 'is_available', lambda: False)
    compat.cpu_capability.cache_clear()
    try:
        capability = compat.cpu_capability()
        assert not capability.onednn and not capability.bf16 and not capability.amx
        assert capability.label().endswith('+ no oneDNN')
        assert compat.onednn_linear() is None and compat.onednn_linear(torch.bfloat16) is None
    finally:
        compat.cpu_capability.cache_clear()
    assert caplog_mmengine() == []
