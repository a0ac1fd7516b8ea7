"""Speed and memory of BiXT against its peers, measured in one run on the CPU (issue 22).

    python tools/benchmark.py [--original /path/to/BiXT]    # the suite (`make bench`)
    python tools/benchmark.py --quick                        # a smoke run with tiny sizes
    python tools/benchmark.py --sections forward scaling --sizes 512 1024 --out work_dirs/bench

Sections, each in fresh subprocesses (peak memory = the growth of the peak resident set over the
process's resident set before the measured call; the peak is reset before each call):

- ``forward``: the backbone forward, batch 1, interleaved round-robin per input size (medians),
  with the fp32 and bf16 matmul peaks in the same window: mmbixt in fp32 (the default: one fused
  attention call per direction), in fp32 with the opt-in fused bi-directional attention kernel, on
  its fast path (``fast_inference()``) and compiled with ``torch.compile`` (fp32 and under the fast path, at the
  first size); the original (``--original``: its own classes, the same random weights, fp32 and
  under bf16 autocast); mmseg's ViT with the same width and depth.
- ``segment``: whole-image inference as users run it (``test_step`` on a uint8 image: data
  preprocessor, forward, resize, argmax) of UPerNet and Semantic FPN on BiXT-Ti/16, Ti/8, Ti/4 and
  mmseg's ViT-Ti/16 (the same neck width and heads), fp32 and fast path, interleaved per head and
  size, with the backbone/neck/head split of the Ti/16 models and the fast path's pixel agreement.
  Above 512 px one round after the warm-up.
- ``train``: training steps (AdamW) of each of those segmentors per size: the first step gives the
  peak memory, the next the time (above 512 px the first step's time).
- ``scaling``: backbone forward time and peak memory over input sizes 256..2048 for BiXT-Ti/16,
  Ti/8, the original and ViT, interleaved per size (points where ViT's attention would pass 20 GB
  are skipped and said so), plotted (``scaling.png``).
- ``fits``: whole-image UPerNet inference of a 2048x2048 image (BiXT-Ti/16, ViT-Ti/16) and a
  1024x1024 one (BiXT-Ti/8), each once, against the 16 GB budget.
- ``profile``: ``torch.profiler``'s time per op of the calls behind the hardest goals (the fp32
  and fast-path backbone at 1024, Ti/4 at 512, UPerNet and Semantic FPN on the fast path at 512):
  where the time goes when a goal is missed.

Prints every table and every goal of issue 22 with its value and PASS/MISS; writes ``results.json``,
``table.md`` and ``scaling.png`` under ``--out``; results and table are saved after every job, so
a stopped run keeps what it measured and ``--resume`` runs only what is missing. Only ratios from
one group (one process, interleaved) mean anything on a shared machine.
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
SECTIONS = ('forward', 'segment', 'train', 'scaling', 'fits', 'profile')
SCALING_SIZES = (256, 384, 512, 768, 1024, 1536, 2048)
VIT_LIMIT_GB = 20     # the scaling plot's ViT points stop where its attention passes this
FIT_BUDGET_GB = 16    # whole-image inference budget of issue 22, goal 5
BACKBONES = {'BiXT-Ti/16': ('bixt', 16), 'BiXT-Ti/8': ('bixt', 8), 'BiXT-Ti/4': ('bixt', 4),
             'ViT-Ti/16': ('vit', 16)}
HEADS = {'upernet': 'UPerNet', 'fpn': 'Semantic FPN'}


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


def vit_attention_gb(size: int) -> float:
    """Memory of one layer's attention matrices in ViT-Ti/16 (fp32, 3 heads, softmax input and
    output both alive): what grows quadratically and decides where ViT stops fitting."""
    n = tokens_of(size, 16) + 1
    return 2 * HEADS_VIT * n * n * 4 / 2 ** 30


# ----------------------------------------------------------------------------- peers
ORIGINAL_PACKAGE = 'bixt_original_timm'  # the original's timm fork, loaded beside the installed timm


class ForkFinder(importlib.abc.MetaPathFinder):
    """Finds ``timm`` and its submodules in the original's clone only (not on ``sys.path``), and
    the clone's own top-level modules the fork imports (``three_augment``) where nothing else
    provides that name."""

    def __init__(self, repo: str):
        self.repo = repo

    def find_spec(self, name, path=None, target=None):
        if is_timm(name):
            return importlib.machinery.PathFinder.find_spec(name, path if path else [self.repo])
        if ('.' not in name and osp.isfile(osp.join(self.repo, name + '.py'))
                and importlib.machinery.PathFinder.find_spec(name) is None):
            return importlib.machinery.PathFinder.find_spec(name, [self.repo])
        return None


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


def bixt_backbone(stride: int):
    """mmbixt's BiXT-Ti/``stride`` backbone (random weights, the configs' four output layers)."""
    from mmbixt.models.backbones import BiXTBackbone
    return BiXTBackbone(arch=ARCHS[stride], out_indices=(3, 5, 7, 11)).eval()


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


# ----------------------------------------------------------------------------- timing
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



# ----------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'/proc/self/status has no {field}')


def reset_peak_rss() -> bool:
    """Resets the peak resident set of this process (Linux ``clear_refs``); False where it
    cannot, and then peaks are the growth of the process's lifetime maximum."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _glibc():
    try:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        return libc if hasattr(libc, 'mallopt') and hasattr(libc, 'malloc_trim') else None
    except OSError:  # not glibc: resident sets include freed heap, peaks are lower bounds
        return None


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def malloc_for(peaks: bool) -> None:
    """glibc's malloc keeps freed blocks resident and reuses them, so a call's peak resident set
    would miss what earlier calls left behind. For peak measurements every block of 128 KiB or
    more is mapped on its own (returned on free); for timing, up to 32 MiB come from the heap
    (where glibc's adaptive threshold ends up). Freed heap is returned either way."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024 if peaks else 32 * 1024 * 1024)
        libc.malloc_trim(0)


def measure(fn: Callable) -> tuple[float, float]:
    """``(milliseconds, peak MB)`` of one call: the peak resident set it reached over the resident
    set before it."""
    malloc_for(peaks=True)
    before = _status_kb('VmRSS')
    if not reset_peak_rss():
        before = max(before, _status_kb('VmHWM'))
    start = time.perf_counter()
    fn()
    elapsed = (time.perf_counter() - start) * 1e3
    peak = max(0, _status_kb('VmHWM') - before) / 1024
    malloc_for(peaks=False)
    return elapsed, peak


def interleaved_with_peaks(functions: dict[str, Callable], rounds: int,
                           warm_process: bool = True) -> dict[str, dict]:
    """Median ms (round-robin after one warm-up each, which measures the peak MB) of each
    function; with ``rounds=0`` the warm-up's time. ``warm_process`` first runs one function
    untimed, so the process's one-time setup (libraries' caches, thread pools) is nobody's peak."""
    import torch
    times = {name: [] for name in functions}
    with torch.no_grad():
        if warm_process:
            next(iter(functions.values()))()
        first = {name: measure(fn) for name, fn in functions.items()}
        peaks = {name: peak for name, (_, peak) in first.items()}
        for _ in range(rounds):
            for name, fn in functions.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: {'ms': statistics.median(times[name] or [first[name][0]]), 'peak_mb': peaks[name]}
            for name in functions}


# ----------------------------------------------------------------------------- backbone forward
def with_switch(value: str, fn: Callable) -> Callable:
    """``fn`` run with the fused bi-directional attention kernel switched on ('1') or off ('0')."""
    from mmbixt.models.core.bidir_attention import SWITCH

    def run():
        previous = os.environ.get(SWITCH)
        os.environ[SWITCH] = value
        try:
            return fn()
        finally:
            os.environ.pop(SWITCH) if previous is None else os.environ.update({SWITCH: previous})
    return run


def on_fast_path(fn: Callable, model=None) -> Callable:
    from mmbixt.models.core.fast_ops import fast_inference

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
    from mmbixt.models.core.fast_ops import cpu_bf16_capability
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
        functions['original bf16 autocast'] = autocast(lambda: run_theirs(img))
    else:
        ours = bixt_backbone(stride)
    functions['mmbixt fp32'] = lambda: ours(img)
    functions['mmbixt fp32, fused attention kernel'] = with_switch('1', lambda: ours(img))
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
    out['ms'] = interleaved(functions, args['rounds'])
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


# ----------------------------------------------------------------------------- segmentors
def segmentor(head: str, backbone: str, stride: int, size: int):
    """UPerNet or Semantic FPN (our configs' neck width and heads) on BiXT-Ti/``stride`` or on
    mmseg's ViT-Ti/16 (its own ``MultiLevelNeck`` to the same four scales and width)."""
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    import mmbixt  # noqa: F401  (registers BiXT modules)
    register_all_modules(init_default_scope=True)
    name = {'upernet': 'upernet_bixt', 'fpn': 'fpn_bixt'}[head]
    cfg = Config.fromfile(str(REPO / f'configs/_base_/models/{name}.py')).model
    if backbone == 'bixt':
        cfg['backbone'].update(arch=ARCHS[stride], drop_path_rate=0.0)
    else:
        vit_like_bixt_neck(cfg, size)
    _plain_bn(cfg)
    return MODELS.build(cfg)  # a ConfigDict: mmseg reads test_cfg.mode as an attribute


def vit_like_bixt_neck(cfg: dict, size: int) -> None:
    """Turns a BiXT segmentor config into mmseg's ViT-Ti/16 one with the same pyramid and heads."""
    cfg['type'] = 'EncoderDecoder'
    cfg['backbone'] = dict(type='VisionTransformer', img_size=(size, size), patch_size=16,
                           embed_dims=DIMS, num_layers=LAYERS, num_heads=HEADS_VIT,
                           mlp_ratio=MLP_RATIO, out_indices=(2, 5, 8, 11), qkv_bias=True,
                           with_cls_token=True, norm_cfg=dict(type='LN', eps=1e-6),
                           act_cfg=dict(type='GELU'), interpolate_mode='bicubic')
    pyramid = dict(type='MultiLevelNeck', in_channels=[DIMS] * 4, out_channels=DIMS,
                   scales=[4, 2, 1, 0.5])
    fpn = cfg['neck'].get('fpn')
    if fpn:  # Semantic FPN: the pyramid, then mmseg's FPN on it, as BiXTFeaturePyramid does
        fpn = dict(fpn, in_channels=[DIMS] * 4)
        cfg['decode_head']['in_channels'] = [fpn['out_channels']] * 4
    else:
        cfg['decode_head']['in_channels'] = [DIMS] * 4
    cfg['neck'] = [pyramid, fpn] if fpn else pyramid
    if cfg.get('auxiliary_head'):
        cfg['auxiliary_head']['in_channels'] = DIMS


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


def whole_image_batch(size: int, seed: int = 0) -> dict:
    """One uint8 image and its metainfo, as a dataloader hands them to ``test_step``."""
    import torch
    from mmseg.structures import SegDataSample
    shape = (size, size)
    image = torch.randint(0, 256, (3,) + shape, dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(seed))
    sample = SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape))
    return dict(inputs=[image], data_samples=[sample])


def segment_group(head: str, size: int, args: dict) -> dict:
    """Whole-image inference of every backbone under ``head`` at ``size``, fp32 and fast path,
    interleaved; the Ti/16 model's backbone/neck/head split; the fast path's pixel agreement."""
    import torch
    torch.manual_seed(0)
    data = whole_image_batch(size)
    functions, models = {}, {}
    for label in args['backbones']:
        kind, stride = BACKBONES[label]
        model = models[label] = segmentor(head, kind, stride, size).eval()
        functions[f'{label} fp32'] = lambda m=model: m.test_step(data)
        if kind == 'bixt':
            functions[f'{label} fast path'] = on_fast_path(lambda m=model: m.test_step(data), model)
    rounds = rounds_at(size, args['rounds'])
    out = {'head': head, 'size': size, 'runs': interleaved_with_peaks(functions, rounds)}
    if 'BiXT-Ti/16' in models:
        model = models['BiXT-Ti/16']
        with torch.no_grad():
            expected = model.test_step(data)[0].pred_sem_seg.data
        actual = on_fast_path(lambda: model.test_step(data), model)()[0].pred_sem_seg.data
        out['agreement'] = (actual == expected).float().mean().item()
        if args['split']:
            out['split'] = {mode: split_times(model, size, mode, rounds)
                            for mode in ('fp32', 'fast path')}
    return out


def split_times(model, size: int, mode: str, rounds: int) -> dict[str, float]:
    """Median ms of the backbone, the neck and the decode head of one whole-image forward."""
    import torch
    from mmbixt.models.core.fast_ops import fast_inference
    img = torch.randn(1, 3, size, size)
    times = {'backbone': [], 'neck': [], 'decode head': []}
    for _ in range(rounds + 1):  # the first is a warm-up
        with fast_inference(model) if mode == 'fast path' else torch.no_grad():
            start = time.perf_counter()
            feats = model.backbone(img)
            after_backbone = time.perf_counter()
            feats = model.neck(feats) if model.with_neck else feats
            after_neck = time.perf_counter()
            model.decode_head(feats)
            end = time.perf_counter()
        for part, seconds in zip(times, (after_backbone - start, after_neck - after_backbone,
                                         end - after_neck)):
            times[part].append(seconds * 1e3)
    return {part: statistics.median(values[1:]) for part, values in times.items()}


def rounds_at(size: int, rounds: int) -> int:
    """Segmentor rounds at ``size``: as asked up to 512 px, one above (a 1024 px UPerNet call is
    about 4x a 512 px one; this keeps `make bench` in its budget)."""
    return rounds if size <= 512 else min(rounds, 1)


# ----------------------------------------------------------------------------- training
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


def train_case(case: str, args: dict) -> dict:
    """One training measurement (``head:backbone label:size``) in this fresh process: the first
    step gives the peak memory, the median of ``train_repeats`` steps after it the time (the first
    step's time when 0, and above 512 px, where one step is long enough to time alone)."""
    import torch
    torch.manual_seed(0)
    head, label, size = case.split(':')
    kind, stride = BACKBONES[label]
    model = segmentor(head, kind, stride, int(size))
    step = segmentor_step(model, int(size), args['train_batch'])
    first_ms, peak = measure(step)  # the first step's peak: AdamW's state is created in it
    times = []
    for _ in range(args['train_repeats'] if int(size) <= 512 else 0):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return {'ms': statistics.median(times or [first_ms]), 'peak_mb': peak}


# ----------------------------------------------------------------------------- scaling and fits
def scaling_group(size: int, peers: list[str], args: dict) -> dict:
    """Every peer's backbone forward at one size, fp32, interleaved: time (median) and peak memory
    (each call's own: the peak is reset and freed memory returned before it)."""
    import torch
    original = load_original(args['original']) if 'original BiXT-Ti/16' in peers else None
    img = torch.randn(1, 3, size, size)
    functions, skipped = {}, {}
    for peer in peers:
        if peer == 'mmseg ViT-Ti/16' and vit_attention_gb(size) > VIT_LIMIT_GB:
            skipped[peer] = f'attention alone {vit_attention_gb(size):.0f} GB > {VIT_LIMIT_GB} GB'
            continue
        functions[peer] = lambda fn=scaling_model(peer, size, original): fn(img)
    return {'size': size, 'runs': interleaved_with_peaks(functions, args['scaling_rounds']),
            'skipped': skipped}


def scaling_points(groups: list[dict]) -> list[dict]:
    """The per-size groups as one ``{'peer', 'points': {size: run}}`` per peer."""
    peers: dict[str, dict] = {}
    for group in groups:
        for peer, run in group.get('runs', {}).items():
            peers.setdefault(peer, {})[str(group['size'])] = run
        for peer, reason in group.get('skipped', {}).items():
            peers.setdefault(peer, {})[str(group['size'])] = {'skipped': reason}
        if 'error' in group:
            peers.setdefault('error', {})[str(group.get('size'))] = {'error': group['error']}
    return [{'peer': peer, 'points': points} for peer, points in peers.items()]


def scaling_model(peer: str, size: int, original) -> Callable:
    if peer == 'mmseg ViT-Ti/16':
        return vit_backbone(size)
    if peer == 'original BiXT-Ti/16':
        return original_and_ours(original, 16, size)[0]
    return bixt_backbone(int(peer.rsplit('/', 1)[1]))


def fit_case(case: str, args: dict) -> dict:
    """One whole-image UPerNet inference (``backbone label:size``), fp32, timed once."""
    import torch
    label, size = case.split(':')
    kind, stride = BACKBONES[label]
    model = segmentor('upernet', kind, stride, int(size)).eval()
    data = whole_image_batch(int(size))
    with torch.no_grad():
        ms, peak = measure(lambda: model.test_step(data))
    return {'ms': ms, 'peak_mb': peak}


# ----------------------------------------------------------------------------- profiles
# What the goals that are hard to meet spend their time on, op by op (the explanation of a MISS):
# the fp32 and fast-path backbone against the original, Ti/4, and the segmentors' fast path.
PROFILES = {
    'BiXT-Ti/16 backbone, fp32': ('backbone', 16, 1024, 'fp32'),
    'BiXT-Ti/16 backbone, fast path': ('backbone', 16, 1024, 'fast path'),
    'BiXT-Ti/4 backbone, fp32': ('backbone', 4, 512, 'fp32'),
    'UPerNet-BiXT-Ti/16 whole image, fast path': ('upernet', 16, 512, 'fast path'),
    'Semantic FPN-BiXT-Ti/16 whole image, fast path': ('fpn', 16, 512, 'fast path')}
PROFILE_TOP = 8


def profile_case(case: str, size: Optional[int] = None) -> dict:
    """``torch.profiler``'s self CPU time per op of one warm call of ``PROFILES[case]`` (at
    ``size`` instead of its own, for smoke runs): the ``PROFILE_TOP`` largest, the rest summed."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    what, stride, own_size, mode = PROFILES[case]
    size = size or own_size
    torch.manual_seed(0)
    if what == 'backbone':
        model = bixt_backbone(stride)
        img = torch.randn(1, 3, size, size)
        call = lambda: model(img)  # noqa: E731
    else:
        model = segmentor(what, 'bixt', stride, size).eval()
        data = whole_image_batch(size)
        call = lambda: model.test_step(data)  # noqa: E731
    if mode == 'fast path':
        call = on_fast_path(call, model)
    with torch.no_grad():
        call()
        start = time.perf_counter()
        call()
        ms = (time.perf_counter() - start) * 1e3
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
    ops = sorted(((e.key, e.self_cpu_time_total / 1e3) for e in prof.key_averages()),
                 key=lambda op: -op[1])
    total = sum(t for _, t in ops) or 1.0
    top = [[name, t, t / total] for name, t in ops[:PROFILE_TOP]]
    rest = total - sum(t for _, t, _ in top)
    return {'size': size, 'ms': ms, 'profiled_ms': total,
            'ops': top + [['(all other ops)', rest, rest / total]]}


def profile_table(cases: dict) -> str:
    lines = ['| profile (one warm call, self CPU time) | op | ms | share |', '|---|---|---:|---:|']
    for case, result in cases.items():
        if 'ops' not in result:
            lines.append(f'| {case} | error: {result.get("error", "")} | | |')
            continue
        lines.append(f'| {case}, {result["size"]} px | (whole call, unprofiled) | '
                     f'{result["ms"]:.0f} | |')
        lines += [f'| | {name} | {t:.0f} | {share:.0%} |' for name, t, share in result['ops']]
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- children
def child_main(spec: str) -> None:
    job = json.loads(spec)
    import torch
    torch.set_num_threads(job['args']['threads'])
    runners = {'forward': lambda: forward_group(job['size'], job['stride'], job['args']),
               'segment': lambda: segment_group(job['head'], job['size'], job['args']),
               'train': lambda: train_case(job['case'], job['args']),
               'scaling': lambda: scaling_group(job['size'], job['peers'], job['args']),
               'fits': lambda: fit_case(job['case'], job['args']),
               'profile': lambda: profile_case(job['case'], job.get('size'))}
    try:
        result = runners[job['kind']]()
    except Exception as exc:  # noqa: BLE001  (reported, the run goes on)
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

# ----------------------------------------------------------------------------- goals
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


# ----------------------------------------------------------------------------- tables
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


def segment_table(groups: list[dict]) -> str:
    lines = ['| whole-image inference (test_step) | input | ms | peak MB | vs ViT-Ti/16 fp32 |',
             '|---|---|---:|---:|---:|']
    for group in groups:
        title = f'{HEADS.get(group.get("head"), group.get("head"))}'
        if 'runs' not in group:
            lines.append(f'| {title} | {group.get("size")} | error: {group.get("error", "")} | | |')
            continue
        vit = group['runs'].get('ViT-Ti/16 fp32', {}).get('ms')
        for name, run in group['runs'].items():
            versus = f'{vit / run["ms"]:.2f}x' if vit else ''
            lines.append(f'| {title}-{name} | {group["size"]} | {run["ms"]:.0f} | '
                         f'{run["peak_mb"]:.0f} | {versus} |')
    return '\n'.join(lines)


def split_table(groups: list[dict]) -> str:
    lines = ['| where the time goes (BiXT-Ti/16, whole image) | backbone ms | neck ms '
             '| decode head ms | head share |', '|---|---:|---:|---:|---:|']
    for group in groups:
        for mode, parts in group.get('split', {}).items():
            total = sum(parts.values())
            lines.append(f'| {HEADS[group["head"]]}, {group["size"]} px, {mode} | '
                         f'{parts["backbone"]:.0f} | '
                         f'{parts["neck"]:.0f} | {parts["decode head"]:.0f} | '
                         f'{parts["decode head"] / total:.0%} |')
    return '\n'.join(lines)


def cases_table(title: str, cases: dict) -> str:
    lines = [f'| {title} | ms | peak MB |', '|---|---:|---:|']
    for case, r in cases.items():
        value = (f'{r["ms"]:.0f} | {r["peak_mb"]:.0f}' if 'ms' in r
                 else f'error: {r.get("error", "")} |')
        lines.append(f'| {case_label(case)} | {value} |')
    return '\n'.join(lines)


def case_label(case: str) -> str:
    parts = case.split(':')
    if len(parts) == 3:
        return f'{HEADS[parts[0]]}-{parts[1]}, {parts[2]} px'
    return f'UPerNet-{parts[0]}, {parts[1]} px'


def scaling_table(peers: list[dict]) -> str:
    lines = ['| backbone forward, fp32, batch 1 | input | ms | peak MB |', '|---|---|---:|---:|']
    for peer in peers:
        if 'points' not in peer:
            lines.append(f'| {peer.get("peer")} | | error: {peer.get("error", "")} | |')
            continue
        for size, point in peer['points'].items():
            value = (f'{point["ms"]:.0f} | {point["peak_mb"]:.0f}' if 'ms' in point
                     else f'skipped: {point.get("skipped", point.get("error"))} |')
            lines.append(f'| {peer["peer"]} | {size} | {value} |')
    return '\n'.join(lines)


def targets_table(rows: list[Row]) -> str:
    return '\n'.join(['| goal (issue 22) | measured | |', '|---|---:|---|'] + [
        f'| {name} | {value} | {"-" if ok is None else "PASS" if ok else "MISS"} |'
        for name, value, ok in rows])


def plot(peers: list[dict], path: Path, title: str) -> None:
    """Forward time and peak memory against the input size, log-log, one line per peer."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for peer in peers:
        points = sorted((int(size), p) for size, p in peer.get('points', {}).items() if 'ms' in p)
        if not points:
            continue
        sizes = [size for size, _ in points]
        line, = ax_time.plot(sizes, [p['ms'] for _, p in points], 'o-', label=peer['peer'])
        ax_mem.plot(sizes, [p['peak_mb'] / 1024 for _, p in points], 'o-', color=line.get_color(),
                    label=peer['peer'])
        skipped = [int(s) for s, p in peer.get('points', {}).items() if 'skipped' in p]
        if skipped:
            ax_time.annotate(f'> {VIT_LIMIT_GB} GB from {min(skipped)} px: not run',
                             (sizes[-1], points[-1][1]['ms']), fontsize=7)
    sizes = sorted({int(s) for peer in peers for s in peer.get('points', {})})
    for ax, label in ((ax_time, 'forward time [ms]'), (ax_mem, 'peak memory [GB]')):
        ax.set(xscale='log', yscale='log', xlabel='input size [px], square image', ylabel=label)
        ax.set_xticks(sizes, [str(s) for s in sizes], rotation=45)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- masks (issue 17)
# Self-contained: `python tools/benchmark.py --masks [--rounds R] [--threads T]` runs only this.
MASK_SIZES = (512, 1024)
# Four ADE20K-like test images (after the 2048x512 resize), all of different sizes.
MIXED_TEST_SHAPES = ((512, 683), (512, 768), (384, 512), (512, 640))


def mask_cost(size: int, rounds: int) -> dict:
    """BiXT-Ti/16 at ``size`` with nothing padded, interleaved (median ms): the backbone without
    and with ``valid_shapes`` (every pixel real), and its layers without a token mask and with an
    all-valid one (what the masked attention itself costs, as in a batch with padding)."""
    import torch
    torch.manual_seed(0)
    backbone = bixt_backbone(16)
    img = torch.randn(1, 3, size, size)
    tokens = torch.randn(1, tokens_of(size, 16), DIMS)
    all_valid = torch.ones(tokens.shape[:2], dtype=torch.bool)
    core, indices = backbone.core, list(backbone.out_indices)
    ms = interleaved({
        'backbone': lambda: backbone(img),
        'backbone, valid_shapes': lambda: backbone(img, valid_shapes=[(size, size)]),
        'layers': lambda: core.forward_until(tokens, indices),
        'layers, all-valid mask': lambda: core.forward_until(tokens, indices, all_valid)}, rounds)
    return {'size': size, 'ms': ms,
            'valid_shapes_ratio': ms['backbone, valid_shapes'] / ms['backbone'],
            'mask_kernel_ratio': ms['layers, all-valid mask'] / ms['layers']}


def mixed_test_batch(shapes) -> dict:
    """A test batch as the dataloader gives it: uint8 images of ``shapes`` and their samples."""
    import torch
    from mmseg.structures import SegDataSample
    return dict(inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in shapes],
                data_samples=[SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
                              for h, w in shapes])


def batched_test_gain(rounds: int, shapes=MIXED_TEST_SHAPES) -> dict:
    """UPerNet-BiXT-Ti/16 ``test_step`` on images of different sizes: the batch at once against
    one image at a time, interleaved (median ms and the speed-up)."""
    import torch
    torch.manual_seed(0)
    model = segmentor('upernet', 'bixt', 16, max(max(s) for s in shapes)).eval()
    batch = mixed_test_batch(shapes)
    singles = [dict(inputs=[img], data_samples=[sample])
               for img, sample in zip(batch['inputs'], batch['data_samples'])]
    ms = interleaved({f'batch {len(shapes)}': lambda: model.test_step(batch),
                      'batch 1': lambda: [model.test_step(single) for single in singles]}, rounds)
    return {'shapes': [list(s) for s in shapes], **ms,
            'gain': ms['batch 1'] / ms[f'batch {len(shapes)}']}


def masks_report(rounds: int, quick: bool = False) -> list[str]:
    """The lines of the mask section: cost without padding, gain of a batched mixed-size test."""
    lines = []
    for size in (64, 128) if quick else MASK_SIZES:
        cost = mask_cost(size, rounds)
        lines.append(f'masks, nothing padded, {size}x{size} Ti/16: backbone with/without '
                     f'valid_shapes {cost["valid_shapes_ratio"]:.3f}; layers with an all-valid '
                     f'token mask / without {cost["mask_kernel_ratio"]:.3f}')
    shapes = ((64, 96), (80, 64), (48, 64), (64, 64)) if quick else MIXED_TEST_SHAPES
    gain = batched_test_gain(rounds, shapes)
    lines.append(f'batched test, {len(shapes)} mixed sizes {gain["shapes"]}: batch 1 / batch '
                 f'{len(shapes)} time {gain["gain"]:.2f}x')
    return lines


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--original', help='a clone of the original BiXT repository')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: tiny sizes, one round, no warm-up training step, no '
                             'torch.compile')
    parser.add_argument('--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument('--sizes', type=int, nargs='+',
                        help='backbone and segmentor input sizes (default 512 1024)')
    parser.add_argument('--ti4-size', type=int, default=512, help='Ti/4 forward size (0: none)')
    parser.add_argument('--rounds', type=int, default=3, help='interleaved rounds per group')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--no-compile', action='store_true', help='skip torch.compile')
    parser.add_argument('--onnx', action='store_true', help='add ONNX Runtime to the forward peers')
    parser.add_argument('--train-batch', type=int, default=2,
                        help='2 at least: UPerNet norms its 1x1 pooled map over the batch')
    parser.add_argument('--train-repeats', type=int, default=1,
                        help='timed training steps after one warm-up step (0: time the first)')
    parser.add_argument('--scaling-sizes', type=int, nargs='+', default=list(SCALING_SIZES))
    parser.add_argument('--scaling-rounds', type=int, default=1,
                        help='timed rounds per point after the first (0: time the first)')
    parser.add_argument('--fit-sizes', type=int, nargs=2, default=[2048, 1024],
                        metavar=('TI16', 'TI8'), help='whole-image sizes of the memory check')
    parser.add_argument('--masks', action='store_true',
                        help='only the token-mask section (issue 17): masked vs unmasked with '
                             'nothing padded, batch 4 vs batch 1 test over mixed sizes')
    parser.add_argument('--out', type=Path, default=REPO / 'work_dirs' / 'benchmark')
    parser.add_argument('--plot', type=Path, help='where the plot goes (default OUT/scaling.png)')
    parser.add_argument('--resume', action='store_true',
                        help="keep the jobs OUT/results.json already holds (a stopped run's), "
                             'run the others')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or [64]
        args.ti4_size, args.rounds, args.train_repeats, args.no_compile = 0, 1, 0, True
        args.scaling_sizes, args.fit_sizes = [32, 64, 96], [128, 64]
    args.sizes = args.sizes or [512, 1024]
    return args


def jobs_of(section: str, args) -> list[tuple[str, dict]]:
    """(label, job) of every child process of ``section``."""
    if section == 'forward':
        groups = [(size, 16) for size in args.sizes] + ([(args.ti4_size, 4)] if args.ti4_size
                                                         else [])
        return [(f'forward {size} px, Ti/{stride}', dict(
            kind='forward', size=size, stride=stride, peaks=True, vit=True,
            onnx=args.onnx and size == max(args.sizes),
            compile=not args.no_compile and (size, stride) == (args.sizes[0], 16)))
            for size, stride in groups]
    if section == 'segment':
        return [(f'{HEADS[head]} {size} px', dict(kind='segment', head=head, size=size,
                                                  backbones=list(BACKBONES),
                                                  split=size == args.sizes[0]))
                for head in HEADS for size in args.sizes]
    if section == 'train':
        return [(case, dict(kind='train', case=case)) for case in
                (f'{head}:{label}:{size}' for head in HEADS for size in args.sizes
                 for label in BACKBONES)]
    if section == 'scaling':
        peers = ['mmbixt BiXT-Ti/16', 'mmbixt BiXT-Ti/8', 'mmseg ViT-Ti/16']
        peers += ['original BiXT-Ti/16'] if args.original else []
        return [(f'scaling {size} px', dict(kind='scaling', size=size, peers=peers))
                for size in args.scaling_sizes]
    if section == 'profile':
        return [(f'profile {case}', dict(kind='profile', case=case,
                                         **({'size': 64} if args.quick else {})))
                for case in PROFILES]
    ti16, ti8 = args.fit_sizes
    return [(case, dict(kind='fits', case=case))
            for case in (f'BiXT-Ti/16:{ti16}', f'BiXT-Ti/8:{ti8}', f'ViT-Ti/16:{ti16}')]


KEYED_SECTIONS = ('train', 'fits', 'profile')  # results keyed by case; the others are lists


def empty_results() -> dict:
    return {'forward': [], 'segment': [], 'train': {}, 'scaling': [], 'fits': {}, 'profile': {},
            'done': {}}


def run_sections(args, results: dict, save: Callable[[dict], None]) -> dict:
    """Runs every job of ``args.sections`` not already in ``results['done']`` (``--resume``),
    each in a fresh process, and saves the results after each one."""
    common = dict(threads=args.threads, rounds=args.rounds, original=args.original,
                  train_batch=args.train_batch, train_repeats=args.train_repeats,
                  scaling_rounds=args.scaling_rounds)
    for section in args.sections:
        for label, job in jobs_of(section, args):
            if label in results['done']:
                print(f'  {label}: kept from the earlier run', flush=True)
                continue
            job['args'] = {**common, **{k: job.pop(k) for k in list(job)
                                        if k not in ('kind', 'size', 'stride', 'head', 'case',
                                                     'peers')}}
            start = time.perf_counter()
            result = in_child(job, args.threads)
            took = time.perf_counter() - start
            if section in KEYED_SECTIONS:
                results[section][job['case']] = result
            else:
                for key in ('size', 'stride', 'head'):
                    if key in job:
                        result.setdefault(key, job[key])
                result['label'] = label
                results[section] = [r for r in results[section] if r.get('label') != label]
                results[section].append(result)
            if 'error' not in result:
                results['done'][label] = round(took)
            save(results)
            print(f'  {label} ({took:.0f} s): {summary(result)}', flush=True)
    return results


def earlier_results(path: Path, machine: str) -> dict:
    """``--resume``: the results of an earlier run of this machine and settings at ``path``."""
    if not path.is_file():
        return empty_results()
    try:
        earlier = json.loads(path.read_text())
    except ValueError as err:
        sys.exit(f'error: --resume: {path} is not a benchmark result ({err}); move it away or '
                 'run without --resume')
    if earlier.get('machine') != machine:
        sys.exit(f'error: --resume: {path} was measured as "{earlier.get("machine")}", this run '
                 f'is "{machine}"; give another --out or run without --resume')
    return {**empty_results(), **{k: v for k, v in earlier.items() if k in empty_results()}}


def summary(result: dict) -> str:
    if 'error' in result:
        return result['error']
    if 'ms' in result and isinstance(result['ms'], dict):
        return ', '.join(f'{k} {v:.0f} ms' for k, v in result['ms'].items())
    if 'runs' in result:
        return ', '.join(f'{k} {v["ms"]:.0f} ms' for k, v in result['runs'].items())
    if 'ops' in result:
        return f'{result["ms"]:.0f} ms, ' + ', '.join(f'{name} {share:.0%}'
                                                      for name, _, share in result['ops'][:3])
    return f'{result.get("ms", 0):.0f} ms, peak {result.get("peak_mb", 0):.0f} MB'


def report(results: dict, machine: str, command: str, args) -> str:
    parts = [forward_table(results['forward']) if results['forward'] else '',
             segment_table(results['segment']) if results['segment'] else '',
             split_table(results['segment']) if any('split' in g for g in results['segment'])
             else '',
             cases_table('training step', results['train']) if results['train'] else '',
             scaling_table(scaling_points(results['scaling'])) if results['scaling'] else '',
             cases_table(f'whole-image UPerNet inference, fp32 (budget {FIT_BUDGET_GB} GB)',
                         results['fits']) if results['fits'] else '',
             profile_table(results['profile']) if results.get('profile') else '',
             targets_table(targets(results))]
    return f'{machine}; `{command}`\n\n' + '\n\n'.join(p for p in parts if p) + '\n'


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    import torch
    if args.masks:
        torch.set_num_threads(args.threads)
        print('\n'.join(masks_report(args.rounds, args.quick)))
        return None
    from mmbixt.fileio import atomic_write, check_output_dir
    from mmbixt.models.core.fast_ops import cpu_bf16_capability
    check_output_dir(str(args.out), '--out')
    args.out.mkdir(parents=True, exist_ok=True)
    machine = (f'{os.cpu_count()}-core CPU ({torch.backends.cpu.get_cpu_capability()}, bf16: '
               f'{cpu_bf16_capability().kind}), {args.threads} threads, torch {torch.__version__}')
    print(f'# mmbixt benchmark: {machine}; batch 1 forward; medians of interleaved rounds',
          flush=True)
    started = time.perf_counter()
    command = 'python tools/benchmark.py ' + ' '.join(argv if argv is not None else sys.argv[1:])
    results_path, table_path = args.out / 'results.json', args.out / 'table.md'
    results = earlier_results(results_path, machine) if args.resume else empty_results()

    def save(results: dict) -> None:  # after every job: a stopped run keeps what it measured
        with atomic_write(str(results_path)) as tmp, open(tmp, 'w') as f:
            json.dump(dict(machine=machine, **results), f, indent=1)
        with atomic_write(str(table_path)) as tmp, open(tmp, 'w') as f:
            f.write(report(results, machine, command.strip(), args))
    results = run_sections(args, results, save)
    save(results)
    print('\n' + table_path.read_text())
    written = [table_path, results_path]
    if results['scaling']:
        plot_path = args.plot or args.out / 'scaling.png'
        plot(scaling_points(results['scaling']), plot_path,
             f'Backbone forward, fp32, batch 1, {args.threads} '
             f'thread(s), {machine.split(" (")[0]}')
        written.append(plot_path)
    print(f'wrote {", ".join(map(str, written))} in {time.perf_counter() - started:.0f} s')


if __name__ == '__main__':
    with contextlib.suppress(KeyboardInterrupt):
        main()
