"""Speed and memory of BiXT against mmseg's ViT and a plain BiXT, on the CPU (or what torch sees).

    python tools/benchmark.py                     # the default suite (about 10 min on 2 cores)
    python tools/benchmark.py --quick             # a 2-minute subset
    python tools/benchmark.py --sizes 512 1024 --strides 16 --threads 2 --out work_dirs/bench

Every case runs in its own subprocess, so its peak memory is the growth of the process's maximum
resident set (``ru_maxrss``) over its resident set before the timed step; times are the best of
several repeats (the machine may be shared: only ratios from one run mean anything). FLOPs are
counted analytically (a multiply-add is 2 FLOPs) and set against a matmul peak measured in the same
run. Prints one table, then each target with its measured value and PASS/MISS; writes
``results.json`` and ``scaling.png`` (time against tokens) under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
DIMS, HEADS_VIT, LAYERS, LATENTS, MLP_RATIO = 192, 3, 12, 64, 4
TRAIN_FLOP_FACTOR = 3  # backward is about twice the forward


@dataclass(frozen=True)
class Case:
    """One measurement: ``model`` in ``mode`` at ``size`` x ``size`` (``stride`` for BiXT)."""
    model: str  # bixt | plain | vit | upernet | fpn | matmul
    mode: str   # fwd | bf16 | train | ort (ONNX Runtime, mmbixt.deploy)
    size: int = 0
    stride: int = 16

    @property
    def label(self) -> str:
        name = {'bixt': f'BiXT-Ti/{self.stride}', 'plain': f'plain BiXT-Ti/{self.stride}',
                'vit': 'ViT-Ti/16 (mmseg)', 'upernet': f'UperNet BiXT-Ti/{self.stride}',
                'fpn': f'SemFPN BiXT-Ti/{self.stride}', 'matmul': 'matmul 2048^3'}[self.model]
        return name


@dataclass
class Result:
    case: Case
    ms: float = float('nan')          # best of the repeats
    ms_median: float = float('nan')
    repeats: int = 0
    peak_mb: float = float('nan')     # growth of the max resident set during the step
    gflop: float = float('nan')
    error: str = ''
    extra: dict = field(default_factory=dict)

    @property
    def gflops_per_s(self) -> float:
        return self.gflop / (self.ms / 1e3)


# ----------------------------------------------------------------------------- analytic FLOPs
def tokens_of(size: int, stride: int) -> int:
    return (size // stride) ** 2


def bixt_gflop(size: int, stride: int) -> float:
    """Forward FLOPs of the BiXT-Ti backbone's 12 bi-directional layers plus tokenizer."""
    n, d, lat = tokens_of(size, stride), DIMS, LATENTS
    embed = 2 * n * (3 * 16 * 16) * d + 2 * n * 64 * d          # patch conv + Fourier projection
    token_side = 2 * n * d * (2 * d + d + 2 * MLP_RATIO * d)    # rv_patches, proj_pat, MLP
    cross = 3 * 2 * lat * n * d                                 # S, latent read, token read
    latent_side = 2 * lat * d * (2 * d + d + 2 * MLP_RATIO * d)  # rv_latents, proj_lat, MLP
    self_attn = 2 * lat * d * (4 * d + 2 * MLP_RATIO * d) + 2 * 2 * lat * lat * d
    return (embed + LAYERS * (token_side + cross + latent_side + self_attn)) / 1e9


def vit_gflop(size: int) -> float:
    n, d = tokens_of(size, 16) + 1, DIMS
    embed = 2 * n * (3 * 16 * 16) * d
    layer = 2 * n * d * (4 * d + 2 * MLP_RATIO * d) + 2 * 2 * n * n * d
    return (embed + LAYERS * layer) / 1e9


def case_gflop(case: Case) -> float:
    if case.model == 'matmul':
        return 2 * 2048 ** 3 / 1e9
    if case.model in ('bixt', 'plain'):
        flop = bixt_gflop(case.size, case.stride)
    elif case.model == 'vit':
        flop = vit_gflop(case.size)
    else:
        return float('nan')  # heads: not counted
    return flop * (TRAIN_FLOP_FACTOR if case.mode == 'train' else 1)


# ----------------------------------------------------------------------------- building models
def build_backbone(case: Case):
    if case.model == 'vit':
        from mmseg.models.backbones import VisionTransformer
        return VisionTransformer(img_size=case.size, patch_size=16, embed_dims=DIMS,
                                 num_layers=LAYERS, num_heads=HEADS_VIT, mlp_ratio=MLP_RATIO,
                                 out_indices=(2, 5, 8, 11), final_norm=True)
    from mmbixt.models.backbones import BiXTBackbone
    from mmbixt.models.core.reference import make_plain
    suffix = {16: 'p16', 8: 'p16s8', 4: 'p16s4'}[case.stride]
    model = BiXTBackbone(arch=f'bixt_ti_l64_d13_{suffix}', out_indices=(3, 5, 7, 11))
    return make_plain(model) if case.model == 'plain' else model


def _bn_not_sync(cfg):
    if isinstance(cfg, dict):
        if cfg.get('type') == 'SyncBN':
            cfg['type'] = 'BN'
        for value in cfg.values():
            _bn_not_sync(value)
    elif isinstance(cfg, list):
        for value in cfg:
            _bn_not_sync(value)


def build_segmentor(case: Case):
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    import mmbixt  # noqa: F401  (registers BiXT modules)
    register_all_modules(init_default_scope=True)
    base = REPO / 'configs' / '_base_' / 'models' / f'{"upernet" if case.model == "upernet" else "fpn"}_bixt.py'
    cfg = Config.fromfile(str(base)).model.to_dict()
    suffix = {16: 'p16', 8: 'p16s8', 4: 'p16s4'}[case.stride]
    cfg['backbone'].update(arch=f'bixt_ti_l64_d13_{suffix}', drop_path_rate=0.0)
    cfg['neck']['in_stride'] = case.stride
    _bn_not_sync(cfg)
    return MODELS.build(cfg)


def step_function(case: Case) -> Callable[[], None]:
    """Builds the model of ``case`` and returns one timed step."""
    import torch
    if case.model == 'matmul':
        dtype = torch.bfloat16 if case.mode == 'bf16' else torch.float32
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        return lambda: torch.mm(a, b)
    segmentor = case.model in ('upernet', 'fpn')
    model = build_segmentor(case) if segmentor else build_backbone(case)
    x = torch.randn(1, 3, case.size, case.size)
    if case.mode == 'ort':  # the same model and input in ONNX Runtime
        from mmbixt.deploy.onnx import ort_session
        run = ort_session(model.eval(), (case.size, case.size), threads=torch.get_num_threads())
        return lambda: run(x)
    if case.mode != 'train':
        model.eval()
        autocast = torch.autocast('cpu', dtype=torch.bfloat16, enabled=case.mode == 'bf16')

        def forward():
            with torch.no_grad(), autocast:
                return model(x, mode='tensor') if segmentor else model(x)
        return forward
    model.train()
    for module in model.modules():  # batch 1: BatchNorm of the heads uses its running stats
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = segmentor_loss(model, case) if segmentor else backbone_loss(model, x)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()
    return train_step


def backbone_loss(model, x):
    return lambda: sum(out.float().square().mean() for out in model(x))


def segmentor_loss(model, case: Case):
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    size = (case.size, case.size)
    sample = SegDataSample(metainfo=dict(img_shape=size, pad_shape=size, ori_shape=size))
    sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1,) + size))
    x = torch.randn(1, 3, *size)
    return lambda: sum(v for k, v in model.loss(x, [sample]).items() if 'loss' in k)


# ----------------------------------------------------------------------------- one case (child)
def current_rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_case(case: Case, threads: int, min_time: float, max_repeats: int) -> Result:
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    step = step_function(case)
    before = current_rss_mb()
    start = time.perf_counter()
    step()  # warm-up; its peak is the step's peak (later steps reuse the allocator's memory)
    warm = time.perf_counter() - start
    peak = max_rss_mb() - before
    times = []
    while len(times) < max_repeats and (len(times) < 2 or sum(times) < min_time):
        if warm > 4 * min_time and len(times) >= 1:
            break  # a slow case: one timed repeat after the warm-up is enough
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return Result(case, ms=min(times) * 1e3, ms_median=statistics.median(times) * 1e3,
                  repeats=len(times), peak_mb=peak, gflop=case_gflop(case))


def child_main(spec: str) -> None:
    args = json.loads(spec)
    case = Case(**args.pop('case'))
    try:
        result = run_case(case, **args)
    except Exception as exc:  # reported in the table, the run goes on
        result = Result(case, error=f'{type(exc).__name__}: {exc}'[:200])
    print('RESULT ' + json.dumps(asdict(result)), flush=True)


def measure(case: Case, args) -> Result:
    spec = json.dumps(dict(case=asdict(case), threads=args.threads, min_time=args.min_time,
                           max_repeats=args.repeats))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, __file__, '--child', spec], capture_output=True,
                          text=True, cwd=REPO, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            data = json.loads(line[7:])
            data['case'] = Case(**data['case'])
            return Result(**data)
    return Result(case, error=f'exit {proc.returncode}: {proc.stderr.strip()[-200:]}')


# ----------------------------------------------------------------------------- the suite
def plan(args) -> list[Case]:
    """Cases grouped by input size, so each comparison is measured close together in time."""
    cases = [Case('matmul', 'fwd'), Case('matmul', 'bf16')]
    for size in args.sizes:
        cases.append(Case('vit', 'fwd', size))
        for stride in args.strides:
            if tokens_of(size, stride) > args.max_tokens:
                continue
            cases.append(Case('bixt', 'fwd', size, stride))
            if stride == 16:
                cases.append(Case('bixt', 'ort', size, stride))
            if stride == 16 and size == max(args.sizes):
                cases.append(Case('bixt', 'bf16', size, stride))
                cases.append(Case('plain', 'fwd', size, stride))
    train_size = 512 if 512 in args.sizes else min(args.sizes)
    if not args.quick:
        for stride in args.strides:
            cases.append(Case('bixt', 'train', train_size, stride))
            if stride < 16:  # the plain attention matrices only matter for long sequences
                cases.append(Case('plain', 'train', train_size, stride))
        cases.append(Case('vit', 'train', train_size))
        for head in ('upernet', 'fpn'):
            cases += [Case(head, 'fwd', train_size, 16), Case(head, 'ort', train_size, 16),
                      Case(head, 'train', train_size, 16)]
    else:
        stride = min(args.strides)
        cases += [Case('bixt', 'train', train_size, stride), Case('plain', 'train', train_size, stride)]
    return cases


def find(results: list[Result], **kwargs) -> Optional[Result]:
    for result in results:
        if all(getattr(result.case, k) == v for k, v in kwargs.items()) and not result.error:
            return result
    return None


def format_table(results: list[Result], peak32: float) -> str:
    header = (f'{"model":<22}{"mode":<6}{"size":>5}{"tokens":>7}{"ms":>10}{"img/s":>8}'
              f'{"peak MB":>9}{"GFLOP":>8}{"GFLOP/s":>9}{"%peak":>7}{"vs ViT":>8}')
    lines = [header, '-' * len(header)]
    for r in results:
        c = r.case
        tokens = tokens_of(c.size, c.stride if c.model != 'vit' else 16) if c.size else 0
        if r.error:
            lines.append(f'{c.label:<22}{c.mode:<6}{c.size:>5}{tokens:>7}  ERROR {r.error}')
            continue
        vit = find(results, model='vit', mode=c.mode if c.mode == 'train' else 'fwd', size=c.size)
        ratio = f'{vit.ms / r.ms:7.2f}x' if vit and c.model != 'vit' and c.size else f'{"":>8}'
        flops = r.gflops_per_s if r.gflop == r.gflop else float('nan')
        peak_pct = 100 * flops / peak32 if c.model != 'matmul' or c.mode == 'fwd' else float('nan')
        lines.append(f'{c.label:<22}{c.mode:<6}{c.size:>5}{tokens:>7}{r.ms:>10.1f}'
                     f'{1e3 / r.ms:>8.2f}{r.peak_mb:>9.0f}{r.gflop:>8.1f}{flops:>9.0f}'
                     f'{peak_pct:>7.0f}{ratio}')
    return '\n'.join(lines)


def targets(results: list[Result], peak32: float) -> list[tuple[str, str, Optional[bool]]]:
    """(target, measured, passed or None when not measured)."""
    def get(**kw):
        return find(results, **kw)
    out = []

    def check(name, value, ok, fmt):
        out.append((name, fmt.format(value) if value is not None else 'not measured',
                    ok if value is not None else None))

    b1024, b512 = get(model='bixt', mode='fwd', size=1024, stride=16), get(model='bixt', mode='fwd', size=512, stride=16)
    v1024, v512 = get(model='vit', mode='fwd', size=1024), get(model='vit', mode='fwd', size=512)
    b4 = get(model='bixt', mode='fwd', size=512, stride=4)
    lean, plain = get(model='bixt', mode='train', size=512, stride=4), get(model='plain', mode='train', size=512, stride=4)
    bf16 = get(model='bixt', mode='bf16', size=1024, stride=16)
    value = v1024.ms / b1024.ms if b1024 and v1024 else None
    check('BiXT-Ti/16 >= 12x faster than ViT-Ti/16 at 1024', value, value and value >= 12, '{:.1f}x')
    value = b1024.ms / b512.ms if b1024 and b512 else None
    check('BiXT-Ti/16 time 1024 / 512 <= 3.4', value, value and value <= 3.4, '{:.2f}x')
    value = b4.ms / v512.ms if b4 and v512 else None
    check('BiXT-Ti/4 at 512 <= 6.5x ViT-Ti/16 at 512', value, value and value <= 6.5, '{:.2f}x')
    value = lean.peak_mb / plain.peak_mb if lean and plain else None
    check('train peak memory Ti/4 at 512 <= 0.5x plain', value, value and value <= 0.5, '{:.2f}x')
    value = b1024.gflops_per_s / peak32 if b1024 and peak32 == peak32 else None
    check('Ti/16 fwd at 1024 >= 70% of fp32 matmul peak', value, value and value >= 0.7, '{:.0%}')
    value = b1024.ms / bf16.ms if b1024 and bf16 else None
    check('bf16 autocast >= 2x faster than fp32 (Ti/16, 1024)', value, value and value >= 2, '{:.2f}x')
    return out


def plot(results: list[Result], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    series = [('vit', 16, 'ViT-Ti/16 (mmseg)', 'k')]
    series += [('bixt', s, f'BiXT-Ti/{s}', c) for s, c in ((16, 'C0'), (8, 'C1'), (4, 'C2'))]
    series += [('plain', 16, 'plain BiXT-Ti/16', 'C3')]
    for model, stride, label, color in series:
        points = sorted((tokens_of(r.case.size, stride), r.ms) for r in results
                        if r.case.model == model and r.case.mode == 'fwd' and not r.error
                        and (model == 'vit' or r.case.stride == stride))
        if points:
            ax.plot(*zip(*points), 'o-' if model != 'plain' else 'x--', color=color, label=label)
    ax.set(xscale='log', yscale='log', xlabel='tokens (image size / stride)^2',
           ylabel='forward time [ms], batch 1', title=title)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='224 and 512 only, fewer cases')
    parser.add_argument('--sizes', type=int, nargs='+', help='image sizes (default 224 512 1024)')
    parser.add_argument('--strides', type=int, nargs='+', default=[16, 8, 4], choices=[16, 8, 4])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--max-tokens', type=int, default=16384,
                        help='skip BiXT cases with more tokens (Ti/4 at 1024 has 65536)')
    parser.add_argument('--min-time', type=float, default=1.0, help='seconds of repeats per case')
    parser.add_argument('--repeats', type=int, default=5, help='most timed repeats per case')
    parser.add_argument('--out', type=Path, default=REPO / 'work_dirs' / 'benchmark')
    parser.add_argument('--plot', type=Path, help='where the plot goes (default OUT/scaling.png)')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ([224, 512] if args.quick else [224, 512, 1024])
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    import torch
    args.out.mkdir(parents=True, exist_ok=True)
    machine = f'{os.cpu_count()}-core CPU, {args.threads} threads, torch {torch.__version__}'
    print(f'# mmbixt benchmark: {machine}; batch 1; time = best of repeats', flush=True)
    results = []
    for case in plan(args):
        result = measure(case, args)
        results.append(result)
        status = result.error or f'{result.ms:.1f} ms, +{result.peak_mb:.0f} MB'
        print(f'  {case.label} {case.mode} {case.size or ""}: {status}', flush=True)
    peak = find(results, model='matmul', mode='fwd')
    peak32 = peak.gflops_per_s if peak else float('nan')
    print(f'\nfp32 matmul peak {peak32:.0f} GFLOP/s', end='')
    bf = find(results, model='matmul', mode='bf16')
    print(f', bf16 {bf.gflops_per_s:.0f} GFLOP/s' if bf else '')
    print(format_table(results, peak32))
    print('\nTargets:')
    for name, value, ok in targets(results, peak32):
        print(f'  {name:<52} {value:>12}  {"-" if ok is None else "PASS" if ok else "MISS"}')
    with open(args.out / 'results.json', 'w') as f:
        json.dump(dict(machine=machine, results=[asdict(r) for r in results]), f, indent=1)
    plot_path = args.plot or args.out / 'scaling.png'
    plot(results, plot_path, f'BiXT vs ViT, fp32 forward ({machine.split(",")[0]}, '
                             f'{args.threads} threads)')
    print(f'\nwrote {args.out / "results.json"} and {plot_path}')


if __name__ == '__main__':
    main()
