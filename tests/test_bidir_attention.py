"""The fused bi-directional attention kernel equals one fused-attention call per direction, honours
the token mask, and steps aside (training, switched off, no compiler) without changing results."""
from __future__ import annotations

import os
import warnings

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from mmbixt import compat
from mmbixt.models.core import bidir_attention
from mmbixt.models.core.bidir_attention import (bidirectional_attention, kernel_applies,
                                                load_kernel, portable_attention)
from mmbixt.models.core.fast_ops import FUSED_BY_DEFAULT
from mmbixt.models.core.layers import BiXTCore


needs_kernel = pytest.mark.skipif(
    load_kernel() is None or not FUSED_BY_DEFAULT,
    reason='the kernel did not build here, or fused paths are switched off')


def test_the_kernel_is_the_cores_default_and_the_functions_default_is_portable():
    r_lat, v_lat, r_tok, v_tok = refs_and_values(1, 2, 8, 20, 16)
    expected = 'portable' if os.environ.get('MMBIXT_FUSED_ATTENTION') == '0' else 'fused'
    assert bidir_attention.DEFAULT_ATTENTION_KERNEL == expected
    assert BiXTCore(32, 2, 8, 1).execution.attention_kernel == expected
    with torch.no_grad():
        default = bidirectional_attention(r_lat, v_lat, r_tok, v_tok)
    for actual, expected in zip(default, portable_attention(r_lat, v_lat, r_tok, v_tok)):
        assert torch.equal(actual, expected)


def refs_and_values(batch, heads, latents, tokens, head_dims, dtype=torch.float32, seed=0):
    """Views ``[B, heads, n, a]`` into ``[B, n, 2, heads, a]`` projections, as the layers pass them."""
    gen = torch.Generator().manual_seed(seed)
    lat = torch.randn(batch, latents, 2, heads, head_dims, generator=gen).to(dtype)
    tok = torch.randn(batch, tokens, 2, heads, head_dims, generator=gen).to(dtype)
    return (*lat.permute(2, 0, 3, 1, 4).unbind(0), *tok.permute(2, 0, 3, 1, 4).unbind(0))


def rel_err(actual, expected) -> float:
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


@needs_kernel
@pytest.mark.parametrize('batch, heads, latents, tokens, head_dims', [
    (1, 6, 64, 200, 32),   # BiXT-Ti widths; a partial last block of 64 tokens
    (3, 2, 8, 37, 16),     # fewer tokens than one block
    (2, 1, 4, 130, 64),    # one head: the tokens split into groups, merged online
    (1, 2, 20, 150, 32),   # latents that fill no whole vector on any CPU (padded lanes)
    (1, 3, 6, 64, 16),     # exactly one tile
])
def test_kernel_equals_one_fused_attention_per_direction(batch, heads, latents, tokens, head_dims):
    r_lat, v_lat, r_tok, v_tok = refs_and_values(batch, heads, latents, tokens, head_dims)
    with torch.no_grad():
        assert kernel_applies(r_lat, r_tok)
        fused = bidirectional_attention(r_lat, v_lat, r_tok, v_tok, kernel='fused')
        plain = portable_attention(r_lat, v_lat, r_tok, v_tok)
    for actual, expected in zip(fused, plain):
        assert actual.shape == expected.shape
        assert rel_err(actual, expected) < 1e-5


@needs_kernel
@pytest.mark.parametrize('fused', [True, False])
def test_token_mask_hides_padding_from_the_latents_only(fused):
    """A padded sample gives the latents what they read from its real tokens alone; every token's
    own read is unaffected by the mask."""
    kernel = 'fused' if fused else 'portable'
    r_lat, v_lat, r_tok, v_tok = refs_and_values(2, 2, 8, 150, 16)
    mask = torch.ones(2, 150, dtype=torch.bool)
    mask[1, 90:] = False  # sample 1 has 90 real tokens
    with torch.no_grad():
        lat_read, tok_read = bidirectional_attention(r_lat, v_lat, r_tok, v_tok, mask, kernel)
        alone = portable_attention(r_lat[1:], v_lat[1:], r_tok[1:, :, :90], v_tok[1:, :, :90])
        unmasked = portable_attention(r_lat, v_lat, r_tok, v_tok)
    assert rel_err(lat_read[1:], alone[0]) < 1e-5
    assert rel_err(lat_read[:1], unmasked[0][:1]) < 1e-5
    assert rel_err(tok_read, unmasked[1]) < 1e-5


@needs_kernel
@pytest.mark.parametrize('dtype, tolerance', [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_scores_spanning_hundreds_stay_exact(dtype, tolerance):
    """One latent whose scores span hundreds while the others' stay near zero: one exponential
    per score for both softmaxes would lose the quiet latents to underflow, so those tiles take a
    second exponential; a token tile all masked, and the scale of every latent, are kept."""
    r_lat, v_lat, r_tok, v_tok = refs_and_values(2, 2, 16, 300, 32)
    r_lat = r_lat.clone()
    r_lat[:, :, 3] *= 60
    r_lat[1, 1, 5] *= -40
    mask = torch.ones(2, 300, dtype=torch.bool)
    mask[1, 64:128] = False  # one whole tile of sample 1 hidden from its latents
    inputs = [t.to(dtype) for t in (r_lat, v_lat, r_tok, v_tok)]
    with torch.no_grad():  # the op itself: its first-use check would hide a fault here
        fused = load_kernel()(*inputs, mask, 32 ** -0.5, 2)
        plain = portable_attention(*(t.float() for t in inputs), mask)
    for actual, expected in zip(fused, plain):
        assert rel_err(actual, expected) < tolerance
        # Every latent row, quiet ones included, matches on its own scale.
        for row_actual, row_expected in zip(actual.flatten(0, 1), expected.flatten(0, 1)):
            assert rel_err(row_actual, row_expected) < tolerance


def test_token_mask_of_the_wrong_shape_is_refused():
    r_lat, v_lat, r_tok, v_tok = refs_and_values(2, 2, 8, 10, 16)
    with pytest.raises(ValueError, match=r'token_mask has shape \(2, 9\), expected \(2, 10\)'):
        bidirectional_attention(r_lat, v_lat, r_tok, v_tok, torch.ones(2, 9, dtype=torch.bool))


@needs_kernel
def test_bf16_kernel_computes_in_fp32():
    inputs = refs_and_values(2, 3, 8, 100, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        fused = bidirectional_attention(*inputs, kernel='fused')
        reference = portable_attention(*(x.float() for x in inputs))
    for actual, expected in zip(fused, reference):
        assert actual.dtype == torch.bfloat16
        assert rel_err(actual, expected) < 1e-2  # bf16 outputs' rounding only


def test_training_switched_off_and_unsupported_widths_take_the_portable_path():
    r_lat, v_lat, r_tok, v_tok = refs_and_values(1, 2, 8, 20, 16)
    assert not kernel_applies(r_lat, r_tok)  # gradients recorded: SDPA has the backward
    with torch.no_grad():
        assert not kernel_applies(*refs_and_values(1, 2, 8, 20, 24)[::2])  # head width 24
        assert not kernel_applies(r_lat.double(), r_tok.double())
        off = bidirectional_attention(r_lat, v_lat, r_tok, v_tok, kernel='portable')
    for actual, expected in zip(off, portable_attention(r_lat, v_lat, r_tok, v_tok)):
        assert torch.equal(actual, expected)


def test_a_kernel_that_does_not_build_falls_back_with_one_warning(monkeypatch, tmp_path):
    broken = tmp_path / 'broken.cpp'
    broken.write_text('#error this kernel does not compile\n')
    monkeypatch.setattr(bidir_attention, 'KERNEL_SOURCE', broken)
    load_kernel.cache_clear()
    compat.forget_self_tests()
    try:
        r_lat, v_lat, r_tok, v_tok = refs_and_values(1, 2, 8, 20, 16)
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter('always')
            first = bidirectional_attention(r_lat, v_lat, r_tok, v_tok, kernel='fused')
            bidirectional_attention(r_lat, v_lat, r_tok, v_tok, kernel='fused')
        messages = [str(w.message) for w in caught if 'did not build' in str(w.message)]
        assert len(messages) == 1, messages
        for actual, expected in zip(first, portable_attention(r_lat, v_lat, r_tok, v_tok)):
            assert torch.equal(actual, expected)
    finally:
        load_kernel.cache_clear()  # the real kernel for the tests after this one
        compat.forget_self_tests()


@needs_kernel
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_the_kernel_passes_its_first_use_check_per_dtype(dtype):
    assert bidir_attention._kernel_mismatch(load_kernel(), dtype) is None


def test_a_kernel_that_differs_or_fails_in_use_falls_back_for_good(monkeypatch, caplog_mmengine):
    r_lat, v_lat, r_tok, v_tok = refs_and_values(1, 2, 8, 20, 16)
    plain = portable_attention(r_lat, v_lat, r_tok, v_tok)

    def failing(*args):
        raise RuntimeError('illegal instruction in the kernel')
    compat.forget_self_tests()
    monkeypatch.setattr(bidir_attention, 'load_kernel', lambda: failing)
    monkeypatch.setattr(bidir_attention, '_kernel_mismatch',
                        lambda op, dtype: None if dtype == torch.float32 else 'differs by 1.0e+00')
    try:
        with torch.no_grad():
            for dtype in (torch.float32, torch.float32, torch.bfloat16):
                args = [t.to(dtype) for t in (r_lat, v_lat, r_tok, v_tok)]
                for actual, expected in zip(bidirectional_attention(*args, kernel='fused'),
                                            portable_attention(*args)):
                    assert torch.equal(actual, expected)
            assert not kernel_applies(r_lat, r_tok)
    finally:
        compat.forget_self_tests()
    assert caplog_mmengine() == [
        'fused bi-directional attention kernel (float32) disabled after an error in use '
        '(RuntimeError: illegal instruction in the kernel); two fused-attention calls serve',
        'fused bi-directional attention kernel (bfloat16) disabled (differs by 1.0e+00); two '
        'fused-attention calls serve']


@needs_kernel
def test_core_inference_runs_the_kernel_and_training_the_fused_attention():
    core = BiXTCore(32, 2, 8, 2, execution=dict(attention_kernel='fused')).eval()
    tokens = torch.randn(1, 70, 32)

    def ops(grad: bool) -> set[str]:
        with torch.set_grad_enabled(grad), profile(activities=[ProfilerActivity.CPU]) as prof:
            core(tokens)
        return {event.key for event in prof.key_averages()}
    inference, training = ops(False), ops(True)
    assert 'mmbixt_bidir::bidir_attention' in inference
    assert 'mmbixt_bidir::bidir_attention' not in training
    assert any('flash_attention_for_cpu' in name for name in training)


@pytest.mark.parametrize('machine, aten, isa', [
    ('x86_64', 'AVX512', '-mavx512f'), ('x86_64', 'AVX2', '-mavx2'), ('x86_64', 'DEFAULT', None),
    ('aarch64', 'DEFAULT', None), ('arm64', 'SVE256', None)])
def test_the_kernel_is_built_for_the_capability_not_the_build_machine(monkeypatch, machine, aten,
                                                                     isa):
    """No -march=native: the instruction set follows ATen's level on x86 (a capped run builds what
    that CPU would run), the compiler's baseline elsewhere; the cache name follows the flags."""
    monkeypatch.setattr(bidir_attention.platform, 'machine', lambda: machine)
    monkeypatch.setattr(bidir_attention, 'cpu_capability',
                        lambda: compat.CpuCapability(aten=aten, onednn=True, bf16=False, amx=False))
    flags = bidir_attention._build_flags()
    assert not any(flag.startswith('-march') for flag in flags)
    isa_flags = [flag for flag in flags if flag.startswith('-m') and flag != '-mtune=native']
    assert (isa in isa_flags) if isa else not isa_flags
    names = {bidir_attention._cache_name('source')}
    monkeypatch.setattr(bidir_attention.platform, 'machine', lambda: 'riscv64')
    names.add(bidir_attention._cache_name('source'))
    assert len(names) == 2


@pytest.mark.parametrize('system, openmp, expected', [
    ('linux', True, ['-fopenmp']), ('linux', False, []), ('darwin', True, [])])
def test_the_kernel_is_built_with_the_openmp_its_parallel_loop_needs(monkeypatch, system, openmp,
                                                                     expected):
    """ATen's parallel_for runs serially in code compiled without OpenMP: where torch's threads
    are OpenMP's, the kernel is compiled and linked with it (not by Apple's compiler)."""
    monkeypatch.setattr(bidir_attention.sys, 'platform', system)
    monkeypatch.setattr(torch.backends.openmp, 'is_available', lambda: openmp)
    assert bidir_attention._openmp_flags() == expected
    assert all(flag in bidir_attention._build_flags() for flag in expected)


@needs_kernel
def test_the_kernel_gives_the_same_reads_on_any_thread_count():
    inputs = refs_and_values(2, 3, 64, 500, 32)
    threads = torch.get_num_threads()
    try:
        outputs = []
        for count in (1, 3):
            torch.set_num_threads(count)
            with torch.no_grad():
                outputs.append(bidirectional_attention(*inputs, kernel='fused'))
    finally:
        torch.set_num_threads(threads)
    for one, several in zip(*outputs):
        assert rel_err(several, one) < 1e-6


def test_the_first_build_is_announced_only_when_the_cache_lacks_it(tmp_path):
    assert not bidir_attention._built(tmp_path, 'kernel_x')
    for where in (tmp_path / 'kernel_x', tmp_path / 'py311_cpu' / 'kernel_y'):
        where.mkdir(parents=True)
        (where / f'{where.name}.so').write_bytes(b'')
    assert bidir_attention._built(tmp_path, 'kernel_x')  # torch's root itself
    assert bidir_attention._built(tmp_path, 'kernel_y')  # its per-version folder
