"""Shared test fixtures: the reference checkpoints of tests/data/reference and small helpers.

tests/data/reference holds checkpoints in the released layout and the outputs the original BiXT
implementation computed for them (six tokeniser variants; see tests/data/reference/README.md)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / 'tests' / 'data' / 'reference'
VARIANTS = ('linear_p16', 'linear_p16s8', 'linear_p16s4', 'conv_p16', 'conv_p8',
            'linear_p16s8_layerscale')

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))



def pytest_sessionstart(session):
    """The tiled attention kernel (the default of CPU inference) is compiled once, here, for this
    CPU class, rather than inside whichever test first runs a model (a tool's output, a timeout);
    parallel workers share the build (torch's lock)."""
    from mmbixt.models.core.bidir_attention import load_kernel
    load_kernel()


# The portable run of tests/test_machines.py switches every fused CPU path off: tests of those
# paths skip there, saying so.
needs_fused = pytest.mark.skipif(os.environ.get('MMBIXT_FUSED_KERNELS') == '0',
                                 reason='fused paths switched off (MMBIXT_FUSED_KERNELS=0)')


def reference_arch(config: dict) -> dict:
    """The ``arch`` dict of a reference model from the ``config`` stored in its expected.pt."""
    return dict(embed_dims=config['embed_dim_lat'], num_heads=config['ca_num_heads'],
                num_latents=config['num_latents'], num_layers=config['depth'] - 1,
                tokenizer=config['tokeniser'], patch_size=config['patch_size'],
                stride=config['token_stride'], layer_scale=config['init_values'] is not None)


@pytest.fixture
def one_thread():
    """Runs a test on one torch thread (restored after): small models run faster so."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def caplog_mmengine():
    """A function returning the warnings (and worse) logged to mmengine's current logger since
    the test began, as lines (what ``print_log(..., logger='current')`` shows the user)."""
    import logging

    from mmengine.logging import MMLogger
    logged = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: logged.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield lambda: list(logged)
    logger.removeHandler(handler)


@pytest.fixture(scope='session')
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.fail(f'{REFERENCE} is missing: it is part of the repository (git checkout tests/data)')
    return REFERENCE


def load_expected(variant: str) -> dict:
    return torch.load(REFERENCE / variant / 'expected.pt', weights_only=True)


def released_layout_state(arch_name: str) -> dict:
    """Random tensors with exactly the keys and shapes of a released checkpoint of ``arch_name``."""
    import json
    shapes = json.loads((REFERENCE / 'released_state_dict_shapes.json').read_text())[arch_name]
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.endswith('num_batches_tracked'):
            state[key] = torch.tensor(7)
        elif key.endswith('running_var'):  # a variance is never negative (the reader refuses it)
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.02
    return state


def write_released_checkpoint(path: Path, state_dict: dict, arch: str, *, zip_folder: str = '',
                              ema: bool = False) -> Path:
    """Writes ``state_dict`` as the BiXT training script did (timm-style dict with an argparse
    Namespace); with ``zip_folder`` the file is put inside a zip, as the weights are published."""
    import argparse
    import zipfile
    ckpt = {'epoch': 299, 'arch': arch, 'state_dict': state_dict, 'optimizer': {},
            'version': 2, 'args': argparse.Namespace(model=arch, lr=5e-4, batch_size=128),
            'metric': 80.0}
    if ema:
        ckpt['state_dict_ema'] = {k: v + 1 for k, v in state_dict.items()}
    pth = path.with_name(path.name + '.pth.tar') if zip_folder else path
    torch.save(ckpt, pth)
    if not zip_folder:
        return path
    with zipfile.ZipFile(path, 'w') as archive:
        archive.write(pth, f'{zip_folder}/model_best.pth.tar')
    pth.unlink()
    return path


def load_tool(name: str):
    """``tools/<name>.py`` as a module (the tools folder is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'tool_{name}', REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module
