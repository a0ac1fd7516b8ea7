"""The shell tools (dist_run.sh, dist_train.sh, dist_test.sh, slurm_train.sh) pick their Python
through tools/python_env.sh: $PYTHON, else an active environment's, else the project's .venv."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def chosen_python(root: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if k not in ('PYTHON', 'VIRTUAL_ENV', 'CONDA_PREFIX')}
    script = f'source {root}/tools/python_env.sh && project_python'
    return subprocess.run(['bash', '-c', script], env={**clean, **env}, check=True,
                          capture_output=True, text=True, cwd='/').stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / 'tools').mkdir()
    shutil.copy(REPO / 'tools' / 'python_env.sh', tmp_path / 'tools')
    venv_python = tmp_path / '.venv' / 'bin' / 'python'
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text('#!/bin/sh\n')
    venv_python.chmod(0o755)
    return tmp_path


def test_project_venv_when_no_environment_is_active(project: Path):
    assert chosen_python(project) == str(project / '.venv' / 'bin' / 'python')


def test_active_environment_and_explicit_python_win(project: Path):
    assert chosen_python(project, VIRTUAL_ENV='/some/env') == 'python'
    assert chosen_python(project, CONDA_PREFIX='/opt/conda') == 'python'
    assert chosen_python(project, PYTHON='/usr/bin/python3.11') == '/usr/bin/python3.11'


def test_plain_python_without_venv(project: Path):
    shutil.rmtree(project / '.venv')
    assert chosen_python(project) == 'python'


@pytest.mark.parametrize('script', ['dist_run.sh', 'slurm_train.sh'])
def test_launchers_use_the_helper(script: str):
    text = (REPO / 'tools' / script).read_text()
    assert 'source tools/python_env.sh' in text and '"$(project_python)"' in text
