"""tools/check_leak.py: repeated inference through mmseg's API keeps memory flat."""
from __future__ import annotations

import subprocess
import sys

import pytest

from reliability_utils import REPO, make_tiny_data, subprocess_env, write_tiny_config

from conftest import load_tool

check_leak = load_tool('check_leak')
MIB, LeakReport = check_leak.MIB, check_leak.LeakReport

CALLS = 120  # the tool's default is 1000
INTERVAL = 20


def test_the_summary_tells_a_leak_from_noise():
    calls = list(range(0, 1001, 100))
    noisy = LeakReport(calls, [500 * MIB + (MIB if i % 2 else 0) for i in range(len(calls))])
    leaking = LeakReport(calls, [500 * MIB + 20 * 1024 * c for c in calls])  # 20 KiB a call
    assert not noisy.leaks(max_growth_mib=8)
    assert leaking.leaks(max_growth_mib=8)
    assert leaking.fitted_growth_bytes == pytest.approx(20 * 1024 * 1000)


@pytest.mark.slow
def test_repeated_inference_keeps_rss_flat(tmp_path):
    config = write_tiny_config(tmp_path / 'tiny.py', make_tiny_data(tmp_path / 'data'))
    done = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'check_leak.py'), str(config),
         '--calls', str(CALLS), '--interval', str(INTERVAL), '--max-growth-mib', '4'],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert 'verdict: flat' in done.stdout
    assert done.stdout.count('RSS ') >= CALLS // INTERVAL  # it did sample along the way
