"""Half precision only where it pays: bf16 on a CPU with native bf16, fp32 (said once, with the
measured cost) on one without; ``--amp`` of the tools follows, fp16 with a scaler on CUDA."""
from __future__ import annotations

import re

import pytest
import torch
from mmengine.config import Config
from torch import nn

from mmbixt.compat import CpuCapability
from mmbixt.models import inference, precision
from mmbixt.operations.engine import amp

from conftest import load_tool

AVX2 = CpuCapability(aten='AVX2', onednn=True, bf16=False, amx=False)
AVX512_BF16 = CpuCapability(aten='AVX512', onednn=True, bf16=True, amx=False)
SAID = re.compile(r'--amp: this CPU \(AVX2\) has no native bf16 \(a bf16 matmul measured \d+x '
                  r'slower than fp32 here\); running fp32')


@pytest.fixture
def machine(monkeypatch):
    """Pretends this CPU has the given capability (the choices, not the kernels, are tested)."""
    def pretend(capability: CpuCapability):
        monkeypatch.setattr(precision, 'cpu_capability', lambda: capability)
        monkeypatch.setattr(inference, 'cpu_half_dtype', precision.cpu_half_dtype)
        monkeypatch.setattr(precision, '_SAID', set())
    return pretend


def test_without_native_bf16_the_cpu_runs_fp32_and_says_so_once(machine, caplog_mmengine):
    machine(AVX2)
    assert precision.autocast_dtype('cpu', '--amp') is None
    assert precision.autocast_dtype('cpu', '--amp') is None
    assert precision.autocast_dtype('cuda', '--amp') == torch.float16
    lines = caplog_mmengine()
    assert len(lines) == 1 and SAID.fullmatch(lines[0]), lines
    assert inference.fast_inference_dtype() == torch.float32
    assert caplog_mmengine()[-1].startswith('fast_inference: this CPU (AVX2) has no native bf16')


def test_with_native_bf16_the_cpu_runs_bf16_silently(machine, caplog_mmengine):
    machine(AVX512_BF16)
    assert precision.autocast_dtype('cpu', '--amp') == torch.bfloat16
    assert inference.fast_inference_dtype() == torch.bfloat16
    assert caplog_mmengine() == []


def test_the_measured_cost_is_a_ratio_of_this_machine():
    assert precision.emulated_bf16_cost() > 0


def optim_cfg() -> Config:
    return Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))))


@pytest.mark.parametrize('capability, device, wrapper', [
    (AVX2, 'cpu', 'OptimWrapper'),                   # fp32, said so
    (AVX512_BF16, 'cpu', 'CpuBf16OptimWrapper'),     # bf16 autocast, no scaler
    (AVX2, 'cuda', 'AmpOptimWrapper'),               # fp16 with mmengine's dynamic scaler
])
def test_train_amp_picks_the_wrapper_of_the_machine(machine, capability, device, wrapper):
    machine(capability)
    cfg = optim_cfg()
    amp.enable_amp_training(cfg, device)
    assert cfg.optim_wrapper.type == wrapper
    assert cfg.optim_wrapper.get('loss_scale') == ('dynamic' if device == 'cuda' else None)


def test_the_cpu_bf16_wrapper_trains_under_bf16_autocast():
    from mmseg.registry import OPTIM_WRAPPERS
    model = nn.Linear(4, 2)
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(
        (torch.is_autocast_enabled('cpu'), torch.get_autocast_dtype('cpu'), o.dtype)))
    wrapper = OPTIM_WRAPPERS.build(dict(type='CpuBf16OptimWrapper',
                                        optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
    before = model.weight.detach().clone()
    with wrapper.optim_context(model):
        loss = model(torch.randn(3, 4)).float().square().mean()
    wrapper.update_params(loss)
    assert seen == [(True, torch.bfloat16, torch.bfloat16)]
    assert model.weight.dtype == torch.float32 and not torch.equal(model.weight, before)


def test_test_tool_amp_without_native_bf16_tests_in_fp32(machine, caplog_mmengine):
    machine(AVX2)
    cfg = Config(dict(test_cfg=dict(type='TestLoop')))
    load_tool('test').enable_autocast(cfg)
    assert 'fp16' not in cfg.test_cfg
    assert SAID.fullmatch(caplog_mmengine()[0])
