"""Section ``attention``: BiXT's bi-directional cross-attention alone, the tiled kernel against two
fused-attention (SDPA) calls, interleaved, at the shapes of goal 30.4 (issue 30): BiXT-Ti/16 at
1024 px and BiXT-Ti/4 at 512 px (6 heads of width 32, 64 latents, batch 1)."""
from __future__ import annotations

from .common import tokens_of
from .measure import interleaved

# case -> (stride, input size): the token count of that backbone's attention.
CASES = {'Ti/16:1024': (16, 1024), 'Ti/4:512': (4, 512)}
QUICK_CASES = {'Ti/16:64': (16, 64)}
HEADS, HEAD_DIMS, LATENTS = 6, 32, 64


def attention_gflop(tokens: int) -> float:
    """The work of two SDPA calls (both directions, batch 1): for each, the similarities and the
    weighted sum, 2 * 2 * heads * latents * tokens * head width. The kernel forms the similarities
    once; its GFLOP/s is counted on this same work, so the ratio of GFLOP/s is the ratio of times."""
    return 8 * HEADS * LATENTS * tokens * HEAD_DIMS / 1e9


def attention_case(case: str, args: dict) -> dict:
    """Two SDPA calls and the tiled kernel on the case's shapes, fp32 and (where the CPU has native
    bf16) bf16, interleaved: median ms, and the largest difference of the kernel's outputs."""
    import torch
    from mmbixt.compat import cpu_capability, relative_error
    from mmbixt.models.core.bidir_attention import bidirectional_attention, kernel_applies
    from mmbixt.models.core.layers import split_heads
    stride, size = (CASES | QUICK_CASES)[case]
    tokens = tokens_of(size, stride)
    generator = torch.Generator().manual_seed(0)
    lat = torch.randn(1, LATENTS, 2 * HEADS * HEAD_DIMS, generator=generator)
    tok = torch.randn(1, tokens, 2 * HEADS * HEAD_DIMS, generator=generator)
    capability = cpu_capability()
    dtypes = [torch.float32] + ([torch.bfloat16] if capability.bf16 else [])
    functions, max_rel_diff = {}, {}
    for dtype in dtypes:
        name = str(dtype).replace('torch.', '')
        # [B, heads, n, a] views of the references-and-values projections, as the layers pass them.
        inputs = (*split_heads(lat.to(dtype), 2, HEADS), *split_heads(tok.to(dtype), 2, HEADS))
        with torch.no_grad():
            if not kernel_applies(*inputs):
                return {'error': f'the tiled kernel does not serve {name} here (no compiler, or '
                                 'it failed its first-use check: see the log)'}
            kernel = bidirectional_attention(*inputs, kernel='fused')
            sdpa = bidirectional_attention(*inputs, kernel='portable')
        max_rel_diff[name] = max(relative_error(k, s) for k, s in zip(kernel, sdpa))
        functions[f'two SDPA calls {name}'] = (
            lambda inputs=inputs: bidirectional_attention(*inputs, kernel='portable'))
        functions[f'tiled kernel {name}'] = (
            lambda inputs=inputs: bidirectional_attention(*inputs, kernel='fused'))
    out = {'tokens': tokens, 'gflop': attention_gflop(tokens), 'cpu': capability.label(),
           'ms': interleaved(functions, max(args['rounds'], 5)), 'max_rel_diff': max_rel_diff}
    if not capability.bf16:
        out['skipped'] = {'bf16': f'not run: this CPU ({capability.label()}) has no native bf16'}
    return out


def kernel_speedups(results: dict, dtype: str = 'float32') -> dict[str, float]:
    """case -> two SDPA calls' time over the kernel's (the ratio of their GFLOP/s)."""
    speedups = {}
    for case, result in results.items():
        ms = result.get('ms', {})
        sdpa, kernel = ms.get(f'two SDPA calls {dtype}'), ms.get(f'tiled kernel {dtype}')
        if sdpa and kernel:
            speedups[case] = sdpa / kernel
    return speedups


def attention_table(results: dict) -> str:
    lines = ['| attention (batch 1, 6 heads of 32, 64 latents) | tokens | ms | GFLOP/s | vs two '
             'SDPA calls | max rel. diff |', '|---|---:|---:|---:|---:|---:|']
    for case, result in results.items():
        if 'error' in result:
            lines.append(f'| {case} | | error: {result["error"]} | | | |')
            continue
        for name, ms in result['ms'].items():
            dtype = name.rsplit(' ', 1)[1]
            sdpa = result['ms'][f'two SDPA calls {dtype}']
            diff = (f'{result["max_rel_diff"][dtype]:.1e}' if name.startswith('tiled') else '')
            lines.append(f'| {case.replace(":", " at ")} px, {name} | {result["tokens"]} | '
                         f'{ms:.2f} | {result["gflop"] / ms * 1e3:.0f} | {sdpa / ms:.2f}x | '
                         f'{diff} |')
        for name, why in result.get('skipped', {}).items():
            lines.append(f'| {case.replace(":", " at ")} px, {name} | | {why} | | | |')
    return '\n'.join(lines)
