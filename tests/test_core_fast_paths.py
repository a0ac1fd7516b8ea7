"""The BiXT core's fast paths agree with the plain math: chunked training path, bf16, torch.compile."""
from __future__ import annotations

import pytest
import torch

from mmbixt.models.core import fast_ops
from mmbixt.models.core.layers import BiXTCore, CrossAttentionBlock
from plain_reference import plain_forward_layers

DIMS, HEADS, LATENTS, LAYERS = 32, 2, 8, 3


def small_core(layer_scale: bool = False, drop_path: float = 0.0, chunk=None) -> BiXTCore:
    torch.manual_seed(0)
    core = BiXTCore(DIMS, HEADS, LATENTS, LAYERS, layer_scale_init=0.5 if layer_scale else None,
                    cross_drop_path_rate=drop_path,
                    execution=dict(train_chunk_size=chunk, stream_chunk_size=chunk))
    with torch.no_grad():  # random weights large enough that every term matters
        for param in core.parameters():
            param.normal_(0.0, 0.3)
    return core


def outputs_and_grads(core: BiXTCore, tokens: torch.Tensor, layers_fn=None, seed: int = 1):
    """Every layer's (latents, tokens) and the gradients of a loss over all of them."""
    tokens = tokens.clone().requires_grad_()
    torch.manual_seed(seed)  # same stochastic-depth draws for every path
    pairs = list((layers_fn or core.forward_layers)(tokens))
    outs = [t for pair in pairs for t in pair]
    loss = sum(out.sin().sum() for out in outs)
    grads = torch.autograd.grad(loss, [tokens] + list(core.parameters()))
    return outs, grads


def assert_close_rel(actual, expected, rel: float) -> None:
    for a, e in zip(actual, expected):
        err = (a.float() - e.float()).abs().max() / e.float().abs().max().clamp_min(1e-12)
        assert err < rel, f'relative error {err:.2e} >= {rel:.0e}'


@pytest.mark.parametrize('num_tokens,chunk', [(37, 10), (64, 16), (5, 4)])
@pytest.mark.parametrize('layer_scale', [False, True])
def test_chunked_path_matches_full_and_plain(num_tokens, chunk, layer_scale):
    core = small_core(layer_scale)
    tokens = torch.randn(3, num_tokens, DIMS)
    plain = outputs_and_grads(core, tokens, lambda t: plain_forward_layers(core, t))
    full = outputs_and_grads(core, tokens)
    core.set_execution(train_chunk_size=chunk, stream_chunk_size=chunk)
    chunked = outputs_and_grads(core, tokens)
    for path in (full, chunked):
        assert_close_rel(path[0], plain[0], 1e-5)
        assert_close_rel(path[1], plain[1], 1e-5)


def test_chunked_path_keeps_stochastic_depth_per_sample():
    core = small_core(drop_path=0.5).train()
    tokens = torch.randn(4, 21, DIMS)
    full = outputs_and_grads(core, tokens)
    core.set_execution(train_chunk_size=8, stream_chunk_size=8)
    chunked = outputs_and_grads(core, tokens)
    assert_close_rel(chunked[0], full[0], 1e-5)
    assert_close_rel(chunked[1], full[1], 1e-5)


def count_chunked_calls(monkeypatch) -> dict:
    calls = {'train': [], 'inference': []}
    for name, kind in (('_chunked_token_stream', 'train'), ('_streamed_token_side', 'inference')):
        original = getattr(CrossAttentionBlock, name)

        def spy(self, *args, original=original, kind=kind):
            calls[kind].append(args[0].shape[1])
            return original(self, *args)
        monkeypatch.setattr(CrossAttentionBlock, name, spy)
    return calls


def test_chunking_switches_on_by_token_count(monkeypatch):
    calls = count_chunked_calls(monkeypatch)
    core = small_core(chunk=16)
    core(torch.randn(1, 16, DIMS))                     # not above the threshold
    assert calls == {'train': [], 'inference': []}
    with torch.no_grad():
        core(torch.randn(1, 40, DIMS))                 # inference streams for cache locality
    assert calls == {'train': [], 'inference': [40] * LAYERS}
    core(torch.randn(1, 40, DIMS))                     # training-like call: memory-lean path
    assert calls['train'] == [40] * LAYERS
    core.set_execution(train_chunk_size=None, stream_chunk_size=None)
    core(torch.randn(1, 40, DIMS))
    with torch.no_grad():
        core(torch.randn(1, 40, DIMS))
    assert calls == {'train': [40] * LAYERS, 'inference': [40] * LAYERS}


def test_streamed_inference_is_exact():
    core = small_core().eval()
    tokens = torch.randn(3, 37, DIMS)
    with torch.no_grad():
        whole = core(tokens)
        core.set_execution(train_chunk_size=8, stream_chunk_size=8)  # chunks of 8, the last one of 5
        streamed = core(tokens)
    assert torch.equal(streamed[0], whole[0]) and torch.equal(streamed[1], whole[1])


def test_default_core_chunks_long_sequences():
    core = BiXTCore(DIMS, HEADS, LATENTS, 1)
    assert (core.execution.train_chunk_size, core.execution.stream_chunk_size) == (4096, 4096)


def test_bf16_autocast_close_to_fp32():
    core = small_core().eval()
    with torch.no_grad():
        for param in core.parameters():  # moderate weights: bf16 rounding, not chaos, is tested
            param.mul_(0.3)
    tokens = torch.randn(2, 50, DIMS)
    with torch.no_grad():
        expected = core(tokens)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            actual = core(tokens)
    assert_close_rel(actual, expected, 5e-2)
    core.set_execution(train_chunk_size=16, stream_chunk_size=16)  # the memory-lean chunked path under autocast too (grad mode)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        chunked = core(tokens)
    assert_close_rel(chunked, expected, 5e-2)


@pytest.mark.parametrize('backend', [
    'aot_eager',
    pytest.param('inductor', marks=pytest.mark.slow),  # compiles C++: about a minute
])
def test_compiled_forward_matches_eager(backend):
    torch._dynamo.reset()
    core = small_core().eval()
    tokens = torch.randn(2, 24, DIMS)
    with torch.no_grad():
        expected = core(tokens)
        actual = torch.compile(core, backend=backend, fullgraph=True)(tokens)
    assert_close_rel(actual, expected, 1e-5)


def test_chunked_path_inside_layer_checkpointing():
    core = small_core(chunk=10).train()
    tokens = torch.randn(2, 33, DIMS)
    expected = outputs_and_grads(core, tokens)
    core.set_execution(with_cp=True)
    actual = outputs_and_grads(core, tokens)
    assert_close_rel(actual[0], expected[0], 1e-5)
    assert_close_rel(actual[1], expected[1], 1e-5)


def test_execution_settings_are_held_once_and_set_through_one_call():
    core = small_core(chunk=16)
    held = core.set_execution(stream_chunk_size=None, fused=False)
    assert held is core.execution and (held.train_chunk_size, held.stream_chunk_size) == (16, None)
    assert not held.fused and not held.with_cp
    assert core.set_execution(train_chunk_size=0).train_chunk_size is None  # 0: never chunk
    with pytest.raises(TypeError, match='unknown execution settings'):
        core.set_execution(chunk=8)
    with pytest.raises(ValueError, match='train_chunk_size must be None or a positive'):
        core.set_execution(train_chunk_size=-4)
    with pytest.raises(ValueError, match="attention_kernel must be one of .*'portable', 'fused'"):
        core.set_execution(attention_kernel='flash')
    assert BiXTCore(DIMS, HEADS, LATENTS, LAYERS, execution=held).execution is held
    with pytest.raises(TypeError, match='unknown execution settings'):
        BiXTCore(DIMS, HEADS, LATENTS, LAYERS, execution=dict(chunk=8))


def test_the_kernel_default_comes_from_the_environment_once():
    """The tiled kernel is the default; ``MMBIXT_FUSED_ATTENTION`` sets the choice when mmbixt is
    imported; changing the variable later changes nothing (no per-call read)."""
    import os
    import subprocess
    import sys
    code = ('import os\nfrom mmbixt.models.core import ExecutionSettings\n'
            'first = ExecutionSettings().attention_kernel\n'
            'os.environ["MMBIXT_FUSED_ATTENTION"] = "1" if first == "portable" else "0"\n'
            'print(first, ExecutionSettings().attention_kernel)')
    unset = {k: v for k, v in os.environ.items() if k != 'MMBIXT_FUSED_ATTENTION'}
    for value, kernel in ((None, 'fused'), ('1', 'fused'), ('0', 'portable')):
        env = dict(unset, **({} if value is None else {'MMBIXT_FUSED_ATTENTION': value}))
        out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == [kernel, kernel]


@pytest.mark.skipif(fast_ops.onednn_linear() is None or not fast_ops.FUSED_BY_DEFAULT,
                    reason='no oneDNN in this torch, or fused paths switched off')
def test_fused_switch_turns_the_onednn_kernels_off(monkeypatch):
    calls, original = [], fast_ops.onednn_linear()
    counted = lambda *args: calls.append(1) or original(*args)  # noqa: E731
    monkeypatch.setattr(fast_ops, 'onednn_linear', lambda dtype=torch.float32: counted)
    monkeypatch.setattr(fast_ops, 'onednn_fp32_linears', lambda: True)  # any CPU's ATen level
    core = small_core().eval()
    tokens = torch.randn(2, 24, DIMS)
    with torch.no_grad():
        fused = core(tokens)
        fused_calls = len(calls)
        core.set_execution(fused=False)
        plain = core(tokens)
    assert fused_calls > 0 and len(calls) == fused_calls
    assert_close_rel(plain, fused, 1e-5)


@pytest.mark.parametrize('aten', ['AVX2', 'AVX512', 'DEFAULT'])
def test_fp32_linears_take_aten_on_the_avx2_path_and_onednn_elsewhere(monkeypatch, aten):
    from mmbixt.compat import CpuCapability
    monkeypatch.setattr(fast_ops, 'cpu_capability', lambda: CpuCapability(aten, True, False,
                                                                          False))
    assert fast_ops.onednn_fp32_linears() == (aten != 'AVX2')
    calls, original = [], fast_ops.onednn_linear()
    if original is None:
        pytest.skip('no oneDNN in this torch')
    monkeypatch.setattr(fast_ops, 'onednn_linear',
                        lambda dtype=torch.float32: lambda *args: calls.append(1) or original(*args))
    core = small_core().eval()
    core.set_execution(fused=True)  # whatever MMBIXT_FUSED_KERNELS made the default
    tokens = torch.randn(2, 24, DIMS)
    with torch.no_grad():
        out = core(tokens)
        core.set_execution(fused=False)
        plain = core(tokens)
    assert bool(calls) == (aten != 'AVX2')
    assert_close_rel(out, plain, 1e-5)
