"""Shared test fixtures: the reference checkpoints of ../shared/reference and small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / 'shared' / 'reference'
VARIANTS = ('linear_p16', 'linear_p16s8', 'linear_p16s4', 'conv_p16', 'conv_p8',
            'linear_p16s8_layerscale')

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def reference_arch(config: dict) -> dict:
    """The ``arch`` dict of a reference model from the ``config`` stored in its expected.pt."""
    return dict(embed_dims=config['embed_dim_lat'], num_heads=config['ca_num_heads'],
                num_latents=config['num_latents'], num_layers=config['depth'] - 1,
                tokenizer=config['tokeniser'], patch_size=config['patch_size'],
                stride=config['token_stride'], layer_scale=config['init_values'] is not None)


@pytest.fixture(scope='session')
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.fail(f'{REFERENCE} is missing: the tests need the shared/ folder beside the repo')
    return REFERENCE


def load_expected(variant: str) -> dict:
    return torch.load(REFERENCE / variant / 'expected.pt', weights_only=True)
