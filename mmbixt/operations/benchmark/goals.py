"""The goals of issue 22, judged from the measurements (PASS/MISS, or not measured)."""
from __future__ import annotations

from typing import Optional

from .attention import kernel_speedups
from .common import FIT_BUDGET_GB, PEAK_SIZE
from .scaling import scaling_points


Row = tuple[str, str, Optional[bool]]


def targets(results: dict) -> list[Row]:
    """Every goal of issue 22: (goal, measured value, PASS/MISS; None when not measured)."""
    forward = results.get('forward', [])
    rows: list[Row] = []

    def ms(size, stride, name):
        for group in forward:
            if group.get('size') == size and group.get('stride') == stride:
                return group.get('ms', {}).get(name)
        return None

    def check(name, value, passed, fmt):
        rows.append((name, 'not measured' if value is None else fmt.format(value),
                     None if value is None else bool(passed(value))))

    def ratio(a, b):
        return a / b if a and b else None
    for size, stride, need in ((512, 16, 1.3), (1024, 16, 2.0), (512, 4, 3.0)):
        check(f'1. fp32 BiXT-Ti/{stride} at {size} >= {need}x the original',
              ratio(ms(size, stride, 'original fp32'), ms(size, stride, 'mmbixt fp32')),
              lambda v, need=need: v >= need, '{:.2f}x')
    fast = ms(1024, 16, 'mmbixt fast path')
    check('1. fast path (bf16) at 1024 >= 3x the original fp32',
          ratio(ms(1024, 16, 'original fp32'), fast), lambda v: v >= 3, '{:.2f}x')
    check('1. fast path (bf16) at 1024 >= 1.5x the original under bf16 autocast',
          ratio(ms(1024, 16, 'original bf16 autocast'), fast), lambda v: v >= 1.5, '{:.2f}x')
    diffs = [g['max_rel_diff'] for g in forward if 'max_rel_diff' in g]
    check('1. same outputs as the original (12 layers, relative) <= 1e-5',
          max(diffs) if diffs else None, lambda v: v <= 1e-5, '{:.1e}')
    check('2. fp32 BiXT-Ti/16 at 1024 >= 70% of the best fp32 matmul peak',
          peak_share(forward, 1024), lambda v: v >= 0.7, '{:.0%}')
    compiled = next((g['ms'] for g in forward if 'mmbixt torch.compile fp32' in g.get('ms', {})),
                    None)
    check('3. torch.compile fp32 / eager fp32 (measured; < 1 = compile wins)',
          ratio(compiled and compiled['mmbixt torch.compile fp32'],
                compiled and compiled['mmbixt fp32']), lambda v: True, '{:.2f}')
    check('3. torch.compile fast path / fast path (measured; < 1 = compile wins)',
          ratio(compiled and compiled.get('mmbixt torch.compile fast path'),
                compiled and compiled['mmbixt fast path']), lambda v: True, '{:.2f}')
    seg = {(g.get('head'), g.get('size')): g for g in results.get('segment', [])}

    def seg_ms(head, size, name):
        return seg.get((head, size), {}).get('runs', {}).get(name, {}).get('ms')
    check('4. UPerNet-BiXT-Ti/16 fast path >= 3x UPerNet-ViT-Ti/16 fp32 (512, whole image)',
          ratio(seg_ms('upernet', 512, 'ViT-Ti/16 fp32'),
                seg_ms('upernet', 512, 'BiXT-Ti/16 fast path')), lambda v: v >= 3, '{:.2f}x')
    check('4. Semantic FPN-BiXT-Ti/16 fast path >= 3x its fp32 (512, whole image)',
          ratio(seg_ms('fpn', 512, 'BiXT-Ti/16 fp32'), seg_ms('fpn', 512, 'BiXT-Ti/16 fast path')),
          lambda v: v >= 3, '{:.2f}x')
    agreements = [g['agreement'] for g in seg.values() if 'agreement' in g]
    check('4. fast path predictions agree with fp32 on >= 99.5% of pixels',
          min(agreements) if agreements else None, lambda v: v >= 0.995, '{:.2%}')
    scaling = {s['peer']: s['points'] for s in scaling_points(results.get('scaling', []))}
    measured = [len([p for p in scaling.get(peer, {}).values() if 'ms' in p])
                for peer in ('mmbixt BiXT-Ti/16', 'mmbixt BiXT-Ti/8', 'mmseg ViT-Ti/16')]
    check('5. scaling: >= 6 sizes (256..2048) for BiXT-Ti/16, Ti/8 and ViT',
          min(measured) if scaling else None, lambda v: v >= 6, '{} sizes')
    fits = results.get('fits', {})
    for case, label in (('BiXT-Ti/16:2048', 'UPerNet-BiXT-Ti/16 at 2048'),
                        ('BiXT-Ti/8:1024', 'UPerNet-BiXT-Ti/8 at 1024')):
        peak = fits.get(case, {}).get('peak_mb')
        check(f'5. {label} whole-image inference within {FIT_BUDGET_GB} GB',
              peak and peak / 1024, lambda v: v <= FIT_BUDGET_GB, '{:.1f} GB')
    vit = fits.get('ViT-Ti/16:2048', {})
    check(f'5. UPerNet-ViT-Ti/16 at 2048 does not fit {FIT_BUDGET_GB} GB',
          vit.get('peak_mb') and vit['peak_mb'] / 1024, lambda v: v > FIT_BUDGET_GB, '{:.1f} GB')
    # Goal 6 runs on a CUDA device, not in this CPU suite: the row says where it is measured.
    rows.append(('6. CUDA parity, AMP steps, attention kernels, throughput, DDP',
                 '`make gpu-check` on a GPU (docs/gpu.md)', None))
    return rows + issue30_targets(results, ms, seg_ms)


def capability_of(machine: str) -> str:
    """``'AVX512, bf16: avx512_bf16'`` from the run's machine line."""
    return machine.split('(', 1)[1].split(')', 1)[0] if '(' in machine else 'unknown CPU'


def issue30_targets(results: dict, ms, seg_ms) -> list[Row]:
    """The goals of issue 30, each named with the capability of the CPU it ran on."""
    capability = capability_of(results.get('machine', ''))
    avx2 = capability.startswith('AVX2')
    rows: list[Row] = []

    def check(name, value, passed, fmt, missing='not measured'):
        rows.append((f'{name} [{capability}]', missing if value is None else fmt.format(value),
                     None if value is None else bool(passed(value))))

    def ratio(a, b):
        return a / b if a and b else None
    for size, need in ((512, 1.3), (1024, 1.5)):
        check(f'30.0 AVX2 path: fp32 BiXT-Ti/16 at {size} >= {need}x the original',
              ratio(ms(size, 16, 'original fp32'), ms(size, 16, 'mmbixt fp32')) if avx2 else None,
              lambda v, need=need: v >= need, '{:.2f}x',
              missing='not this run: ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2')
    slowest = [g['ms']['mmbixt fast path'] / g['ms']['mmbixt fp32'] for g in
               results.get('forward', []) if {'mmbixt fast path', 'mmbixt fp32'} <= set(g.get('ms', {}))]
    check('30.0 fast path never slower than fp32 (backbone; worst fast/fp32 time)',
          max(slowest) if slowest else None, lambda v: v <= 1.0, '{:.2f}')
    check('30.1 Semantic FPN-BiXT-Ti/16 fast path >= 2.5x its fp32 with mmseg post-processing '
          '(512, whole image)', ratio(seg_ms('fpn', 512, 'BiXT-Ti/16 fp32'),
                                      seg_ms('fpn', 512, 'BiXT-Ti/16 fast path')),
          lambda v: v >= 2.5, '{:.2f}x')
    fpn = next((g for g in results.get('segment', []) if g.get('head') == 'fpn'
                and g.get('size') == 512 and 'postprocess' in g), None)
    share = fpn and fpn['postprocess']['ms'] / fpn['postprocess']['call_ms']
    check('30.1 post-processing < 15% of the Semantic FPN fast-path call (512)', share,
          lambda v: v < 0.15, '{:.0%}')
    deploy = results.get('deploy', {})
    agreement = deploy.get('agreement', {})
    check('30.2 int8 ONNX Runtime labels = fp32 PyTorch on >= 99.5% of pixels (trained demo '
          'model)', agreement.get('int8'), lambda v: v >= 0.995, '{:.2%}')
    speed_size = deploy.get('int8 speed', {}).get('size', 512)
    speed = deploy.get('int8 speed', {}).get('ms', {})
    check('30.2 UPerNet-BiXT-Ti/16 int8 in ONNX Runtime >= 3x UPerNet-ViT-Ti/16 fp32 PyTorch '
          f'({speed_size}, whole image)', ratio(speed.get('UPerNet-ViT-Ti/16 fp32, PyTorch'),
                                      speed.get('UPerNet-BiXT-Ti/16 int8, ONNX Runtime')),
          lambda v: v >= 3, '{:.2f}x')
    randoms = [g['agreement'] for g in results.get('segment', []) if 'agreement' in g]
    random = f'{min(randoms):.2%}' if randoms else 'not measured'
    check(f'30.3 fast path labels = fp32 on >= 99.5% of pixels, trained demo model (random '
          f'weights, 150 classes: {random})', agreement.get('fast_path'),
          lambda v: v >= 0.995, '{:.2%}')
    attention = kernel_speedups(results.get('attention', {}))
    for case, label in (('Ti/16:1024', 'BiXT-Ti/16 at 1024'), ('Ti/4:512', 'BiXT-Ti/4 at 512')):
        check(f'30.4 tiled attention kernel >= 2x the GFLOP/s of two SDPA calls, fp32, {label}',
              attention.get(case), lambda v: v >= 2, '{:.2f}x')
    check('30.4 fp32 BiXT-Ti/4 at 512 >= 3x the original',
          ratio(ms(512, 4, 'original fp32'), ms(512, 4, 'mmbixt fp32')), lambda v: v >= 3,
          '{:.2f}x')
    return rows


def peak_share(forward: list[dict], size: int) -> Optional[float]:
    """fp32 BiXT-Ti/16 GFLOP/s over the best fp32 matmul GFLOP/s of the same window."""
    group = next((g for g in forward if g.get('size') == size and g.get('stride') == 16
                  and 'ms' in g), None)
    if group is None or 'mmbixt fp32' not in group['ms']:
        return None
    peak = min((v for k, v in group['ms'].items() if k.startswith('matmul fp32')), default=None)
    if peak is None:
        return None
    return (group['gflop'] / group['ms']['mmbixt fp32']) / (2 * PEAK_SIZE ** 3 / 1e9 / peak)
