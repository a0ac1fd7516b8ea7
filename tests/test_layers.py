"""The two layers of mmbixt (docs/architecture.md, Layout): the model layer (``import mmbixt``, what
``custom_imports=['mmbixt']`` loads) registers its modules and changes nothing else in the host, and
never imports the operations layer (``mmbixt.operations``)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / 'mmbixt'
OPERATIONS = 'mmbixt.operations'


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` / ``from ... import`` of ``path`` names (relative ones resolved,
    also the ``from package import submodule`` form), at any depth of the file."""
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f'{base}.{alias.name}' for alias in node.names)
    return found


def model_layer_files() -> list[Path]:
    return [path for path in sorted(PACKAGE.rglob('*.py'))
            if not module_name(path).startswith(OPERATIONS)]


def test_the_import_scan_resolves_relative_imports(tmp_path):
    # The scan below must see the forms a model-layer module could use to reach the operations.
    sample = PACKAGE / 'models' / 'segmentors' / '__init__.py'
    assert 'mmbixt.models.segmentors.bixt_encoder_decoder' in imported_modules(sample)
    assert 'mmbixt.operations.engine' in imported_modules(PACKAGE / 'operations' / '__init__.py')


def test_no_model_layer_module_imports_the_operations_layer():
    offenders = {str(path.relative_to(REPO)): sorted(m for m in imported_modules(path)
                                                      if m == OPERATIONS
                                                      or m.startswith(OPERATIONS + '.'))
                 for path in model_layer_files()}
    assert not {path: names for path, names in offenders.items() if names}


LOADED_BY_IMPORT = '''
import importlib, json, sys
import mmbixt
for name in NAMES:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.startswith('mmbixt.operations'))))
'''


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_importing_every_model_layer_module_loads_nothing_of_the_operations_layer():
    names = [module_name(path) for path in model_layer_files()]
    assert len(names) > 20
    assert json.loads(run_python(LOADED_BY_IMPORT.replace('NAMES', repr(names)))) == []


def test_only_the_tools_import_the_command_line_helpers():
    """``mmbixt.operations.cli`` (one-line errors, ``os._exit`` of distributed workers) is for the
    tools: importing every other module of the package never loads it."""
    names = [module_name(path) for path in sorted(PACKAGE.rglob('*.py'))
             if path.stem != '__main__' and module_name(path) != 'mmbixt.operations.cli']
    code = LOADED_BY_IMPORT.replace('NAMES', repr(names)).replace(
        "m.startswith('mmbixt.operations')", "m == 'mmbixt.operations.cli'")
    assert json.loads(run_python(code)) == []


# What the host holds, through public APIs only: every entry of every mmengine/mmseg registry
# (``Registry.module_dict``), timm's model entrypoints and pretrained configs, the loader mmengine's
# CheckpointLoader picks for a local path (it logs the loader's name), and the warning filters.
HOST_STATE = r'''
import importlib, io, json, logging, os, sys, tempfile, warnings

def registries():
    from mmengine.registry import Registry
    found = {}
    for package in ('mmengine.registry', 'mmseg.registry'):
        module = importlib.import_module(package)
        for attr, value in vars(module).items():
            if isinstance(value, Registry):
                found[f'{package}.{attr}'] = {key: f'{getattr(obj, "__module__", "")}.'
                                              f'{getattr(obj, "__qualname__", repr(obj))}'
                                              for key, obj in value.module_dict.items()}
    return found

def timm_models():
    import timm.models
    entries = {name: f'{timm.models.model_entrypoint(name).__module__}.'
                     f'{timm.models.model_entrypoint(name).__qualname__}'
               for name in timm.models.list_models()}
    return {'entrypoints': entries, 'pretrained': sorted(timm.models.list_pretrained())}

def local_loader():
    import torch
    from mmengine.logging import MMLogger
    from mmengine.runner.checkpoint import CheckpointLoader
    path = os.path.join(tempfile.mkdtemp(), 'probe.pth')
    torch.save({'w': torch.zeros(1)}, path)
    logger = MMLogger.get_instance('host_state_probe', log_level='DEBUG')
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    CheckpointLoader.load_checkpoint(path, map_location='cpu', logger=logger)
    logger.removeHandler(handler)
    return [line.split(' backend')[0] for line in stream.getvalue().splitlines()
            if line.startswith('Loads checkpoint by')]

def state():
    return {'registries': registries(), 'timm': timm_models(), 'loader': local_loader(),
            'warning_filters': [repr(f) for f in warnings.filters]}

PRELOAD
before = state()
import mmbixt
after = state()
print(json.dumps({'before': before, 'after': after}))
'''


def preload_code() -> str:
    """Imports every third-party module ``import mmbixt`` imports, so that what the libraries
    register on their own import is in the snapshot before mmbixt is imported."""
    listed = json.loads(run_python(
        'import json, sys\nbefore = set(sys.modules)\nimport mmbixt\n'
        'print(json.dumps(sorted(m for m in set(sys.modules) - before '
        'if not m.startswith("mmbixt") and not m.startswith("_"))))'))
    return ('import warnings\nwith warnings.catch_warnings():\n'
            '    warnings.simplefilter("ignore")\n'
            f'    for name in {listed!r}:\n'
            '        try:\n            importlib.import_module(name)\n'
            '        except Exception:\n            pass\n')


def test_import_mmbixt_registers_its_modules_and_changes_nothing_else():
    snapshots = json.loads(run_python(HOST_STATE.replace('PRELOAD', preload_code())))
    before, after = snapshots['before'], snapshots['after']
    for name, entries in before['registries'].items():
        kept = {key: after['registries'][name].get(key) for key in entries}
        assert kept == entries, f'{name}: an entry changed'
        added = {key: value for key, value in after['registries'][name].items()
                 if key not in entries}
        assert all(value.startswith('mmbixt.') for value in added.values()), (name, added)
    assert sum(len(after['registries'][name]) - len(entries)
               for name, entries in before['registries'].items()) > 10  # it did register
    timm_before, timm_after = before['timm']['entrypoints'], after['timm']['entrypoints']
    assert {name: timm_after[name] for name in timm_before} == timm_before
    new_models = set(timm_after) - set(timm_before)
    assert new_models and all(timm_after[name].startswith('mmbixt.') for name in new_models)
    assert set(before['timm']['pretrained']) <= set(after['timm']['pretrained'])
    assert after['loader'] == before['loader'] and before['loader']  # mmengine's own local loader
    assert after['warning_filters'] == before['warning_filters']


def test_naming_the_operations_layer_routes_mmengines_loading_through_the_safe_reader():
    code = HOST_STATE.replace('PRELOAD', 'import mmbixt').replace(
        'import mmbixt\nafter', 'import mmbixt.operations\nafter')
    snapshots = json.loads(run_python(code))
    assert snapshots['before']['loader'] != snapshots['after']['loader']
    assert snapshots['after']['loader'] == ['Loads checkpoint by safe_local']
