"""Section ``forward``: the backbone forward of every peer, interleaved per input size."""
from __future__ import annotations

import sys
import time
from typing import Callable

from .common import bixt_gflop
from .measure import interleaved, runnable
from .original import load_original, original_and_ours
from .peers import bixt_backbone, matmul_peaks, onnx_runner, vit_backbone


def with_kernel(model, kernel: str, fn: Callable) -> Callable:
    """``fn`` run with ``model``'s attention kernel set to ``kernel`` (``'fused'``: the fused
    bi-directional attention kernel), set back afterwards."""
    def run():
        before = model.core.execution.attention_kernel
        model.set_execution(attention_kernel=kernel)
        try:
            return fn()
        finally:
            model.set_execution(attention_kernel=before)
    return run


def on_fast_path(fn: Callable, model=None) -> Callable:
    from mmbixt.models.inference import fast_inference

    def run():
        with fast_inference(model):
            return fn()
    return run


def autocast(fn: Callable) -> Callable:
    import torch

    def run():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            return fn()
    return run


def forward_group(size: int, stride: int, args: dict) -> dict:
    """Every forward peer at one size, interleaved, with the matmul peaks in the same window."""
    import torch
    original = load_original(args['original']) if args['original'] else None
    from mmbixt.compat import cpu_capability
    torch.manual_seed(0)
    img = torch.randn(1, 3, size, size)
    out: dict = {'size': size, 'stride': stride, 'gflop': bixt_gflop(size, stride),
                 'cpu': cpu_capability().label()}
    # Without native bf16 every bf16 matmul is emulated (a 2048^3 one took 5 minutes capped at
    # AVX2): the bf16 peers are not run, and the table says why.
    bf16 = cpu_capability().bf16
    functions = matmul_peaks(bf16) if args['peaks'] else {}
    not_run = [] if bf16 else (['matmul bf16 (mm)'] * bool(args['peaks'])
                               + ['original bf16 autocast'] * bool(args['original']))
    if args['original']:
        run_theirs, run_ours, ours = original_and_ours(original, stride, size)
        with torch.no_grad():
            out['max_rel_diff'] = max(((o - t).abs().max() / t.abs().max()).item()
                                      for t, o in zip(run_theirs(img), run_ours(img)))
        functions['original fp32'] = lambda: run_theirs(img)
        if bf16:
            functions['original bf16 autocast'] = autocast(lambda: run_theirs(img))
    else:
        ours = bixt_backbone(stride)
    functions['mmbixt fp32'] = lambda: ours(img)
    functions['mmbixt fp32, two SDPA calls'] = with_kernel(ours, 'portable', lambda: ours(img))
    functions['mmbixt fast path'] = on_fast_path(lambda: ours(img))
    if args['compile']:
        functions.update(compiled_peers(ours, img))
    if args['vit'] and stride == 16:
        vit = vit_backbone(size)
        functions['mmseg ViT-Ti/16 fp32'] = lambda: vit(img)
    if args['onnx'] and stride == 16:
        runner = onnx_runner(ours, size, args['threads'])
        if runner:
            functions['mmbixt ONNX Runtime fp32'] = runner
    functions, skipped = runnable(functions)
    out['ms'] = interleaved(functions, args['rounds'])
    skipped.update({name: f'not run: this CPU ({cpu_capability().label()}) has no native bf16 '
                          '(emulated bf16 is many times slower than fp32)' for name in not_run})
    if skipped:
        out['skipped'] = skipped
    return out


def compiled_peers(model, img) -> dict[str, Callable]:
    """``torch.compile`` of the backbone (inductor, default mode) in fp32 and under the fast path;
    compiled here, once each, so the timed calls are warm. A failure is reported, not fatal."""
    import torch
    compiled = torch.compile(model)
    peers = {'mmbixt torch.compile fp32': lambda: compiled(img),
             'mmbixt torch.compile fast path': on_fast_path(lambda: compiled(img))}
    for name, fn in list(peers.items()):
        start = time.perf_counter()
        try:
            with torch.no_grad():
                fn()
            print(f'  {name}: compiled in {time.perf_counter() - start:.0f} s', file=sys.stderr)
        except Exception as exc:  # noqa: BLE001  (reported in the table)
            print(f'  {name} failed: {type(exc).__name__}: {exc}'[:300], file=sys.stderr)
            del peers[name]
    return peers
