"""Speed and memory of BiXT against its peers, measured in one run on the CPU (issue 14).

    python tools/benchmark.py [--original /path/to/BiXT]    # the suite (`make bench`)
    python tools/benchmark.py --quick                        # a smoke run with tiny sizes
    python tools/benchmark.py --sizes 512 1024 --rounds 5 --threads 2 --out work_dirs/bench

Forward comparisons run interleaved in one process per image size (round-robin over the peers, the
median of each), with the fp32 and bf16 matmul peaks measured in the same window: mmbixt's BiXT in
fp32 and on its fast path (``fast_inference()``), the original implementation from a clone of its
repository (``--original``: its own classes, the same random weights, fp32 and under bf16 autocast),
mmseg's ViT with the same width and depth, and ONNX Runtime when ``onnxruntime`` imports. Training
steps (UPerNet-BiXT-Ti/16 and -Ti/4 against mmseg's UPerNet-ViT-Ti at 512x512, batch 2; the point
model) run in their own subprocesses, so their peak memory is the growth of the maximum resident
set. Only ratios from one run mean anything on a shared machine. Prints the tables and every target
of issue 14 with its value and PASS/MISS; writes ``results.json``, ``table.md`` and ``scaling.png``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
DIMS, HEADS_VIT, LAYERS, LATENTS, MLP_RATIO = 192, 3, 12, 64, 4
ARCHS = {16: 'bixt_ti_l64_d13_p16', 8: 'bixt_ti_l64_d13_p16s8', 4: 'bixt_ti_l64_d13_p16s4'}
PEAK_SIZE = 2048


# ----------------------------------------------------------------------------- analytic FLOPs
def tokens_of(size: int, stride: int) -> int:
    return (size // stride) ** 2


def bixt_gflop(size: int, stride: int) -> float:
    """Forward FLOPs (a multiply-add is 2) of the BiXT-Ti backbone's 12 layers plus tokenizer."""
    n, d, lat = tokens_of(size, stride), DIMS, LATENTS
    embed = 2 * n * (3 * 16 * 16) * d + 2 * n * 64 * d
    token_side = 2 * n * d * (2 * d + d + 2 * MLP_RATIO * d)
    cross = 3 * 2 * lat * n * d
    latent_side = 2 * lat * d * (2 * d + d + 2 * MLP_RATIO * d)
    self_attn = 2 * lat * d * (4 * d + 2 * MLP_RATIO * d) + 2 * 2 * lat * lat * d
    return (embed + LAYERS * (token_side + cross + latent_side + self_attn)) / 1e9


# ----------------------------------------------------------------------------- peers
ORIGINAL_PACKAGE = 'bixt_original_timm'  # the original's timm fork, loaded beside the installed timm


class ForkFinder(importlib.abc.MetaPathFinder):
    """Finds ``timm`` and its submodules in the original's clone only (not on ``sys.path``)."""

    def __init__(self, repo: str):
        self.repo = repo

    def find_spec(self, name, path=None, target=None):
        if name != 'timm' and not name.startswith('timm.'):
            return None
        return importlib.machinery.PathFinder.find_spec(name, path if path else [self.repo])


def import_original_fork(repo: str, *names: str) -> list:
    """The modules ``names`` (e.g. ``'timm.models.bixt'``) of the original's timm fork in the
    clone ``repo``, kept in ``sys.modules`` as ``bixt_original_timm.*``. The fork imports itself as
    ``timm``, so while it loads the installed timm's modules step aside; the very same module
    objects come back afterwards (what mmbixt registered in them stays)."""
    if not osp.isfile(osp.join(repo, 'timm', 'models', 'bixt.py')):
        sys.exit(f'error: --original {repo} is not a clone of the original BiXT repository '
                 '(no timm/models/bixt.py); git clone https://github.com/mrkshllr/BiXT')
    installed = {name: sys.modules.pop(name) for name in list(sys.modules) if is_timm(name)}
    finder = ForkFinder(osp.abspath(repo))
    sys.meta_path.insert(0, finder)
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.meta_path.remove(finder)
        fork = {name: sys.modules.pop(name) for name in list(sys.modules) if is_timm(name)}
        sys.modules.update(installed)
        sys.modules.update({ORIGINAL_PACKAGE + name[len('timm'):]: module
                            for name, module in fork.items()})


def load_original(repo: str):
    """The original's ``BiXT`` class and patch embeddings (``import_original_fork``)."""
    bixt, layers = import_original_fork(repo, 'timm.models.bixt', 'timm.layers')
    embeds = {16: layers.PatchEmbed, 8: layers.PatchEmbedHalfStride,
              4: layers.PatchEmbedQuarterStride}
    return bixt.BiXT, embeds


def is_timm(name: str) -> bool:
    return name == 'timm' or name.startswith('timm.')


def original_and_ours(original, stride: int, size: int):
    """The original's 12 bi-directional layers and ``BiXTBackbone`` with the same random weights:
    two functions image -> list of the 12 layers' tokens ``[B, N, D]``. ``original`` is what
    ``load_original`` returned."""
    from mmbixt import checkpoint as ckpt
    from mmbixt.models.backbones import BiXTBackbone
    BiXT, embeds = original
    theirs = BiXT(img_size=size, patch_size=16, embed_dim_lat=192, embed_dim_pat=192, depth=13,
                  sa_num_heads=6, ca_num_heads=6, num_latents=64, embed_layer=embeds[stride],
                  posenc_type_pat='fourier2d_embadd_proj').eval()
    ours = BiXTBackbone(arch=ARCHS[stride], out_indices=tuple(range(12)), out_norm=False).eval()
    # The original's weights through the one normalise + apply (its 13th layer, head and fixed
    # ``pos`` buffer are the backbone's documented drops; the output norms are off).
    weights = ckpt.BiXTWeights.from_checkpoint(ckpt.normalise_checkpoint(
        theirs.state_dict(), shown_as='the original BiXT (random weights)'))
    drop = ckpt.CLASSIFIER_ONLY + (ckpt.FIXED_POS_BUFFER,) + weights.deeper_layers(12)
    ckpt.load_weights(ours, weights, ckpt.LoadPolicy(drop=drop, defaults=drop))

    def run_theirs(img: 'torch.Tensor') -> list:
        tokens, latents, outs = theirs.encode_pat(img), theirs.latents, []
        for block in theirs.blocks[:12]:
            latents, tokens = block((latents, tokens))
            outs.append(tokens)
        return outs

    def run_ours(img: 'torch.Tensor') -> list:
        return [fmap.flatten(2).transpose(1, 2) for fmap in ours(img)]
    return run_theirs, run_ours, ours


def vit_backbone(size: int):
    from mmseg.models.backbones import VisionTransformer
    vit = VisionTransformer(img_size=size, patch_size=16, embed_dims=DIMS, num_layers=LAYERS,
                            num_heads=HEADS_VIT, mlp_ratio=MLP_RATIO, out_indices=(2, 5, 8, 11),
                            final_norm=True)
    vit.eval()  # mmseg's VisionTransformer.train() returns None: no chaining
    return vit


def onnx_runner(model, size: int, threads: int) -> Optional[Callable]:
    """``model`` exported to ONNX and run by ONNX Runtime on the CPU; None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import torch
    img = torch.randn(1, 3, size, size)
    try:  # the deployment module's exporter, where this checkout has it (issue 11)
        from mmbixt.deploy.onnx import ort_session
    except ImportError:
        ort_session = None
    if ort_session is not None:
        run = ort_session(model, (size, size), threads=threads)
        return lambda: run(img)
    path = Path(tempfile.mkdtemp()) / 'bixt.onnx'
    with torch.no_grad():
        torch.onnx.export(model, (img,), str(path), dynamo=False, opset_version=18,
                          input_names=['img'])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    feed = {'img': img.numpy()}
    return lambda: session.run(None, feed)


def matmul_peaks() -> dict[str, Callable]:
    """fp32 and bf16 ``2048^3`` matmuls, each through ATen's mm and through oneDNN's linear
    kernel (what mmbixt's fused inference path uses); the faster of each dtype is its peak."""
    import torch
    from mmbixt.models.core import fast_ops
    out = {}
    for dtype, name in ((torch.float32, 'fp32'), (torch.bfloat16, 'bf16')):
        a = torch.randn(PEAK_SIZE, PEAK_SIZE).to(dtype)
        b = torch.randn(PEAK_SIZE, PEAK_SIZE).to(dtype)
        out[f'matmul {name} (mm)'] = lambda a=a, b=b: torch.mm(a, b)
        fused = fast_ops.onednn_linear()
        if fused is not None:
            out[f'matmul {name} (oneDNN)'] = lambda a=a, b=b, fused=fused: fused(
                a, b, None, 'none', [], 'none')
    return out


# ----------------------------------------------------------------------------- children
def interleaved(functions: dict[str, Callable], rounds: int) -> dict[str, float]:
    """Median milliseconds of each function, timed round-robin after one warm-up each."""
    import torch
    times = {name: [] for name in functions}
    with torch.no_grad():
        for fn in functions.values():
            fn()
        for _ in range(rounds):
            for name, fn in functions.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def forward_group(size: int, stride: int, args: dict) -> dict:
    """Every forward peer at one size, interleaved, with the matmul peaks in the same window."""
    import torch
    original = load_original(args['original']) if args['original'] else None
    from mmbixt.models.core.fast_ops import cpu_bf16_capability, fast_inference
    torch.manual_seed(0)
    img = torch.randn(1, 3, size, size)
    out: dict = {'size': size, 'stride': stride, 'gflop': bixt_gflop(size, stride),
                 'bf16_cpu': cpu_bf16_capability().kind}
    functions = matmul_peaks() if args['peaks'] else {}
    if args['original']:
        run_theirs, run_ours, ours = original_and_ours(original, stride, size)
        with torch.no_grad():
            out['max_rel_diff'] = max(((o - t).abs().max() / t.abs().max()).item()
                                      for t, o in zip(run_theirs(img), run_ours(img)))
        functions['original fp32'] = lambda: run_theirs(img)
        if args['bf16']:
            functions['original bf16 autocast'] = autocast(lambda: run_theirs(img))
    else:
        from mmbixt.models.backbones import BiXTBackbone
        ours = BiXTBackbone(arch=ARCHS[stride], out_indices=(3, 5, 7, 11)).eval()
    functions['mmbixt fp32'] = lambda: ours(img)
    if args['bf16']:
        functions['mmbixt bf16 autocast'] = autocast(lambda: ours(img))

        def fast():
            with fast_inference():
                return ours(img)
        functions['mmbixt fast path'] = fast
    if args['vit'] and stride == 16:
        vit = vit_backbone(size)
        functions['mmseg ViT-Ti/16 fp32'] = lambda: vit(img)
    if args['onnx'] and stride == 16:
        runner = onnx_runner(ours, size, args['threads'])
        if runner:
            functions['mmbixt ONNX Runtime fp32'] = runner
    out['ms'] = interleaved(functions, args['rounds'])
    return out


def autocast(fn: Callable) -> Callable:
    import torch

    def run():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            return fn()
    return run


def current_rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def segmentor(backbone: str, stride: int, size: int):
    """UPerNet on BiXT-Ti (our config) or on mmseg's ViT-Ti (mmseg's own config, Ti dims)."""
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    import mmbixt  # noqa: F401  (registers BiXT modules)
    register_all_modules(init_default_scope=True)
    if backbone == 'bixt':
        cfg = Config.fromfile(str(REPO / 'configs/_base_/models/upernet_bixt.py')).model
        cfg.backbone.update(arch=ARCHS[stride], drop_path_rate=0.0)
        cfg.neck.in_stride = stride
    else:
        import mmseg
        base = Path(mmseg.__file__).parent / '.mim/configs/_base_/models/upernet_vit-b16_ln_mln.py'
        cfg = Config.fromfile(str(base)).model
        cfg.pretrained = None
        cfg.backbone.update(img_size=(size, size), embed_dims=DIMS, num_heads=HEADS_VIT)
        cfg.neck.update(in_channels=[DIMS] * 4, out_channels=DIMS)
        cfg.decode_head.update(in_channels=[DIMS] * 4, num_classes=150)
        cfg.auxiliary_head.update(in_channels=DIMS, num_classes=150)
    cfg = cfg.to_dict()
    _plain_bn(cfg)
    return MODELS.build(cfg)


def _plain_bn(cfg) -> None:
    """SyncBN -> BN: one process, no process group."""
    if isinstance(cfg, dict):
        if cfg.get('type') == 'SyncBN':
            cfg['type'] = 'BN'
        for value in cfg.values():
            _plain_bn(value)
    elif isinstance(cfg, list):
        for value in cfg:
            _plain_bn(value)


def segmentor_step(model, size: int, batch: int) -> Callable:
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    shape = (size, size)
    samples = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(img_shape=shape, pad_shape=shape, ori_shape=shape))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1,) + shape))
        samples.append(sample)
    images = torch.randn(batch, 3, *shape)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        losses = model.loss(images, samples)
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        optimizer.step()
    return step


def point_step(batch: int, points: int) -> Callable:
    import torch
    from mmbixt.models.segmentors import PointPartSegmentor
    model = PointPartSegmentor(
        backbone=dict(type='PointBiXTBackbone', tokenizer=dict(type='grouped', num_groups=128,
                                                                 group_size=32)),
        decode_head=dict(type='PartSegHead', in_channels=192, num_inputs=3, channels=192)).train()
    cloud = torch.randn(batch, points, 6)
    categories = torch.randint(0, 16, (batch,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model.logits(cloud, categories).float().square().mean().backward()
        optimizer.step()
    return step


def timed_step(step: Callable, repeats: int) -> dict:
    before = current_rss_mb()
    step()  # warm-up; its peak is the step's peak
    peak = max_rss_mb() - before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return {'ms': statistics.median(times), 'peak_mb': peak}


def train_case(kind: str, args: dict) -> dict:
    """One training measurement in this (fresh) process."""
    import torch
    torch.manual_seed(0)
    size, batch = args['train_size'], args['train_batch']
    if kind.startswith('upernet'):
        backbone, stride, chunk = kind.split(':')[1:]
        model = segmentor(backbone, int(stride), size)
        if backbone == 'bixt':  # chunked (memory-lean) or unchunked training path
            model.backbone.core.set_chunk_sizes(train=int(chunk) or None)
        return timed_step(segmentor_step(model, size, batch), args['train_repeats'])
    if kind == 'points':
        return timed_step(point_step(args['point_batch'], args['points']), args['train_repeats'])
    if kind == 'agreement':
        return pixel_agreement(size)
    raise ValueError(kind)


def pixel_agreement(size: int) -> dict:
    """Share of pixels UPerNet-BiXT-Ti/16 (random weights) predicts on the fast path as in fp32."""
    import torch
    from mmbixt.models.core.fast_ops import fast_inference
    model = segmentor('bixt', 16, size).eval()
    img = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected = model(img, mode='tensor').argmax(1)
    with fast_inference():
        actual = model(img, mode='tensor').argmax(1)
    return {'agreement': (actual == expected).float().mean().item()}


def child_main(spec: str) -> None:
    job = json.loads(spec)
    import torch
    torch.set_num_threads(job['args']['threads'])
    try:
        if job['kind'] == 'forward':
            result = forward_group(job['size'], job['stride'], job['args'])
        else:
            result = train_case(job['case'], job['args'])
    except Exception as exc:  # reported, the run goes on
        result = {'error': f'{type(exc).__name__}: {exc}'[:300]}
    print('RESULT ' + json.dumps(result), flush=True)


def in_child(job: dict, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, __file__, '--child', json.dumps(job)],
                          capture_output=True, text=True, cwd=REPO, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[7:])
    return {'error': f'exit {proc.returncode}: {proc.stderr.strip()[-300:]}'}


# ----------------------------------------------------------------------------- report
def targets(forward: list[dict], train: dict) -> list[tuple[str, str, Optional[bool]]]:
    """(target, measured value, PASS/MISS; None when not measured)."""
    rows = []

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
    big = max((g['size'] for g in forward if 'ms' in g), default=None)
    group = next((g for g in forward if g.get('size') == big and g['stride'] == 16), {})
    peak = min((v for k, v in group.get('ms', {}).items() if k.startswith('matmul fp32')),
               default=None)  # the faster of ATen's mm and oneDNN
    ours = ms(big, 16, 'mmbixt fp32')
    share = (group['gflop'] / ours) / (2 * PEAK_SIZE ** 3 / 1e9 / peak) if ours and peak else None
    check(f'fp32 BiXT-Ti/16 at {big} >= 80% of the fp32 matmul peak', share,
          lambda v: v >= 0.8, '{:.0%}')
    for size, stride, need in ((512, 16, 1.3), (1024, 16, 1.5), (512, 4, 1.5)):
        check(f'fp32 BiXT-Ti/{stride} at {size} >= {need}x the original',
              ratio(ms(size, stride, 'original fp32'), ms(size, stride, 'mmbixt fp32')),
              lambda v, need=need: v >= need, '{:.2f}x')
    check(f'ViT-Ti/16 / BiXT-Ti/16 at {big} >= 12',
          ratio(ms(big, 16, 'mmseg ViT-Ti/16 fp32'), ours), lambda v: v >= 12, '{:.1f}')
    diffs = [g['max_rel_diff'] for g in forward if 'max_rel_diff' in g]
    check('same outputs as the original (12 layers, relative) <= 1e-5',
          max(diffs) if diffs else None, lambda v: v <= 1e-5, '{:.1e}')
    fast = ms(big, 16, 'mmbixt fast path')
    check(f'fast path at {big} >= 2x the original fp32',
          ratio(ms(big, 16, 'original fp32'), fast), lambda v: v >= 2, '{:.2f}x')
    check(f'fast path at {big} >= 1.3x the original under bf16 autocast',
          ratio(ms(big, 16, 'original bf16 autocast'), fast), lambda v: v >= 1.3, '{:.2f}x')
    check('fast path: UPerNet pixels agreeing with fp32 >= 99.5%',
          train.get('agreement', {}).get('agreement'), lambda v: v >= 0.995, '{:.2%}')
    lean, whole = train.get('upernet:bixt:4:4096', {}), train.get('upernet:bixt:4:0', {})
    check('chunked training step <= 1.2x unchunked (UPerNet-BiXT-Ti/4)',
          ratio(lean.get('ms'), whole.get('ms')), lambda v: v <= 1.2, '{:.2f}x')
    return rows


def forward_table(forward: list[dict]) -> str:
    lines = ['| input | peer | ms | vs mmbixt fp32 | GFLOP/s | share of fp32 peak |',
             '|---|---|---:|---:|---:|---:|']
    for group in forward:
        if 'ms' not in group:
            lines.append(f'| {group.get("size")} /{group.get("stride")} | error | '
                         f'{group.get("error", "")} | | | |')
            continue
        times = group['ms']
        peak = min((v for k, v in times.items() if k.startswith('matmul fp32')), default=None)
        peak_gflops = 2 * PEAK_SIZE ** 3 / 1e9 / (peak / 1e3) if peak else None
        base = times.get('mmbixt fp32')
        for name, value in times.items():
            is_peak = name.startswith('matmul')
            flop = 2 * PEAK_SIZE ** 3 / 1e9 if is_peak else group['gflop']
            gflops = flop / (value / 1e3) if 'mmbixt' in name or 'original' in name or is_peak else None
            lines.append(
                f'| {"%d^3" % PEAK_SIZE if is_peak else "%d px, Ti/%d" % (group["size"], group["stride"])} '
                f'| {name} | {value:.1f} | {"" if is_peak or not base else f"{base / value:.2f}x"} '
                f'| {"" if gflops is None else f"{gflops:.0f}"} '
                f'| {"" if gflops is None or not peak_gflops else f"{gflops / peak_gflops:.0%}"} |')
    return '\n'.join(lines)


TRAIN_LABELS = {'upernet:bixt:16:4096': 'UPerNet-BiXT-Ti/16', 'upernet:bixt:4:4096':
                'UPerNet-BiXT-Ti/4 (chunked, memory-lean)', 'upernet:bixt:4:0':
                'UPerNet-BiXT-Ti/4 (unchunked)', 'upernet:vit:16:0': 'UPerNet-ViT-Ti/16 (mmseg)',
                'points': 'PointBiXT-Ti part segmentation'}


def train_table(train: dict) -> str:
    lines = ['| training step | ms | peak MB |', '|---|---:|---:|']
    for key, label in TRAIN_LABELS.items():
        if key in train:
            r = train[key]
            value = (f'{r["ms"]:.0f} | {r["peak_mb"]:.0f}' if 'ms' in r
                     else f'error: {r.get("error", "")} |')
            lines.append(f'| {label} | {value} |')
    return '\n'.join(lines)


def plot(forward: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    names = sorted({n for g in forward for n in g.get('ms', {}) if not n.startswith('matmul')})
    for name in names:
        points = sorted((tokens_of(g['size'], g['stride']), g['ms'][name]) for g in forward
                        if name in g.get('ms', {}) and g['stride'] == 16)
        if points:
            ax.plot(*zip(*points), 'o-', label=name)
    ax.set(xscale='log', yscale='log', xlabel='tokens at stride 16', title=title,
           ylabel='forward time [ms], batch 1 (median, interleaved)')
    ax.grid(True, which='both', alpha=0.3)
    if names:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--original', help='a clone of the original BiXT repository')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: tiny sizes, one round, one training step each')
    parser.add_argument('--sizes', type=int, nargs='+', help='Ti/16 input sizes (default 512 1024)')
    parser.add_argument('--ti4-size', type=int, default=512, help='Ti/4 input size (0: none)')
    parser.add_argument('--rounds', type=int, default=5, help='interleaved rounds per size')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--train-size', type=int, default=512)
    parser.add_argument('--train-batch', type=int, default=2)
    parser.add_argument('--train-repeats', type=int, default=1)
    parser.add_argument('--points', type=int, default=2048)
    parser.add_argument('--point-batch', type=int, default=8)
    parser.add_argument('--no-train', action='store_true', help='forward comparisons only')
    parser.add_argument('--out', type=Path, default=REPO / 'work_dirs' / 'benchmark')
    parser.add_argument('--plot', type=Path, help='where the plot goes (default OUT/scaling.png)')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or [64]
        args.ti4_size, args.rounds, args.train_size, args.train_batch = 0, 1, 64, 2
        args.train_repeats, args.points, args.point_batch = 1, 256, 1
    args.sizes = args.sizes or [512, 1024]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    import torch
    from mmbixt.models.core.fast_ops import cpu_bf16_capability
    args.out.mkdir(parents=True, exist_ok=True)
    machine = (f'{os.cpu_count()}-core CPU ({torch.backends.cpu.get_cpu_capability()}, bf16: '
               f'{cpu_bf16_capability().kind}), {args.threads} threads, torch {torch.__version__}')
    print(f'# mmbixt benchmark: {machine}; batch 1 forward; medians of interleaved rounds',
          flush=True)
    common = dict(threads=args.threads, rounds=args.rounds, original=args.original,
                  train_size=args.train_size, train_batch=args.train_batch,
                  train_repeats=args.train_repeats, points=args.points,
                  point_batch=args.point_batch)
    groups = [(size, 16) for size in args.sizes] + ([(args.ti4_size, 4)] if args.ti4_size else [])
    forward = []
    for size, stride in groups:
        flags = dict(peaks=True, bf16=stride == 16, vit=stride == 16, onnx=size == max(args.sizes))
        result = in_child(dict(kind='forward', size=size, stride=stride, args={**common, **flags}),
                          args.threads)
        result.setdefault('size', size)
        result.setdefault('stride', stride)
        forward.append(result)
        print(f'  forward {size} px, Ti/{stride}: ' + (result.get('error') or ', '.join(
            f'{k} {v:.0f} ms' for k, v in result['ms'].items())), flush=True)
    train = {}
    if not args.no_train:
        cases = ['agreement', 'upernet:bixt:16:4096', 'upernet:vit:16:0', 'points']
        if not args.quick:
            cases[2:2] = ['upernet:bixt:4:4096', 'upernet:bixt:4:0']
        for case in cases:
            train[case] = in_child(dict(kind='train', case=case, args=common), args.threads)
            print(f'  {case}: {train[case]}', flush=True)
    table = forward_table(forward) + '\n\n' + train_table(train)
    rows = targets(forward, train)
    target_md = '\n'.join(['| target (issue 14) | measured | |', '|---|---:|---|'] + [
        f'| {name} | {value} | {"-" if ok is None else "PASS" if ok else "MISS"} |'
        for name, value, ok in rows])
    print('\n' + table + '\n\n' + target_md)
    report = f'{machine}; `python tools/benchmark.py {" ".join(argv or sys.argv[1:])}`\n\n'
    (args.out / 'table.md').write_text(report + table + '\n\n' + target_md + '\n')
    with open(args.out / 'results.json', 'w') as f:
        json.dump(dict(machine=machine, forward=forward, train=train), f, indent=1)
    plot_path = args.plot or args.out / 'scaling.png'
    plot(forward, plot_path, f'BiXT-Ti/16 and peers, fp32 forward ({args.threads} threads)')
    print(f'\nwrote {args.out / "table.md"}, {args.out / "results.json"} and {plot_path}')


if __name__ == '__main__':
    with contextlib.suppress(KeyboardInterrupt):
        main()
