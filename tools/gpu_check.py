"""One command for a CUDA machine: does mmbixt run right and fast on this GPU? (issue 22, goal 6)

    python tools/gpu_check.py [--out work_dirs/gpu_check]     # `make gpu-check`
    python tools/gpu_check.py --dry-run                        # tiny sizes on the CPU

Writes one report (printed, and ``report.md`` + ``report.json`` under ``--out``) of:

1. parity: BiXT-Ti/16's four output maps on CUDA in fp32 (TF32 off) against the CPU;
2. AMP training: UPerNet-BiXT-Ti/16 trained on one fixed batch under fp16 (with a gradient
   scaler) and bf16 autocast: every loss finite and the loss falling over the steps;
3. which kernel PyTorch's fused attention takes for each attention call of a BiXT layer, per
   dtype, as the profiler names it, next to ``attention_kernels.sdpa_kernel``'s prediction;
4. throughput (images/s) and peak memory of BiXT-Ti/16 against mmseg's ViT-Ti/16 (backbone
   forward, half-precision autocast) at 512, 1024 and 2048 px;
5. with two GPUs visible: training throughput of a 2-process DDP run against one process.

Under 10 minutes on one GPU. Without a GPU it says so and runs every part as a dry run on the CPU
with tiny sizes (the DDP part as two gloo processes), so the script itself stays tested.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
PARITY_TOLERANCE = 1e-5


def benchmark_builders():
    """The segmentor and backbone builders of the benchmark (``mmbixt.operations.benchmark``)."""
    from mmbixt.operations import benchmark
    return benchmark


class Plan:
    """Sizes and device of this run: the real check on CUDA, tiny sizes on the CPU."""

    def __init__(self, dry_run: bool):
        import torch
        self.dry_run = dry_run
        self.device = 'cpu' if dry_run else 'cuda'
        self.parity_size = 64 if dry_run else 512
        self.train_size, self.train_batch = (32, 2) if dry_run else (512, 4)
        self.train_steps = 6 if dry_run else 20
        self.sizes = [32, 64, 96] if dry_run else [512, 1024, 2048]
        self.rounds = 1 if dry_run else 10
        self.ddp_steps = 2 if dry_run else 20
        self.gpus = 0 if dry_run else torch.cuda.device_count()
        self.half_dtypes = ([torch.float16, torch.bfloat16] if dry_run
                            or torch.cuda.is_bf16_supported() else [torch.float16])

    def batch_for(self, size: int) -> int:
        return 1 if self.dry_run else max(1, 8 * 512 ** 2 // size ** 2)


def synchronize(device: str) -> None:
    import torch
    if device == 'cuda':
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- 1. parity
def parity(plan: Plan) -> dict:
    import torch
    from mmbixt.models.backbones import BiXTBackbone
    torch.manual_seed(0)
    model = BiXTBackbone(arch='bixt_ti_l64_d13_p16', out_indices=(3, 5, 7, 11)).eval()
    img = torch.randn(1, 3, plan.parity_size, plan.parity_size)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for the comparison
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        expected = model(img)
        actual = model.to(plan.device)(img.to(plan.device))
    diff = max(((a.cpu() - e).abs().max() / e.abs().max()).item()
               for a, e in zip(actual, expected))
    return {'max_rel_diff': diff, 'ok': diff <= PARITY_TOLERANCE,
            'note': f'{plan.parity_size} px, fp32, TF32 off'}


# ----------------------------------------------------------------------------- 2. AMP training
def amp_training(plan: Plan, bench) -> dict:
    import torch
    out = {}
    for dtype in plan.half_dtypes:
        torch.manual_seed(0)
        model = bench.segmentor('upernet', 'bixt', 16, plan.train_size).to(plan.device)
        losses = train_steps(model, plan, dtype)
        third = max(1, len(losses) // 3)  # the first third's mean against the last third's
        first, last = statistics.mean(losses[:third]), statistics.mean(losses[-third:])
        finite = all(map(_finite, losses))
        out[str(dtype).split('.')[-1]] = {'losses': losses, 'finite': finite,
                                          'falling': last < first, 'ok': finite and last < first}
    return out


def _finite(value: float) -> bool:
    return value == value and abs(value) != float('inf')


def train_steps(model, plan: Plan, dtype) -> list[float]:
    """``plan.train_steps`` AdamW steps on one fixed batch under autocast ``dtype``."""
    step = training_step(model.loss, model, plan, plan.device, dtype)
    model.train()
    return [step() for _ in range(plan.train_steps)]


def training_step(loss_fn: Callable, model, plan: Plan, device: str,
                  dtype) -> Callable[[], float]:
    """One AdamW step of ``loss_fn(images, samples)`` (``model.loss``, or a DDP-wrapped model in
    ``mode='loss'``) on one fixed batch of learnable labels (32 px blobs), under autocast
    ``dtype`` (fp16 with a gradient scaler)."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    size, batch = plan.train_size, plan.train_batch
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, size, size, generator=gen).to(device)
    samples = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size)))
        labels = torch.randint(0, 150, (1, size // 32, size // 32), generator=gen)
        labels = labels.repeat_interleave(32, 1).repeat_interleave(32, 2)
        sample.gt_sem_seg = PixelData(data=labels.to(device))
        samples.append(sample)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    scaler = torch.amp.GradScaler(device, enabled=dtype == torch.float16)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype):
            losses = loss_fn(images, samples)
            loss = sum(v for k, v in losses.items() if 'loss' in k)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.item()
    return step


# ----------------------------------------------------------------------------- 3. SDPA kernels
def sdpa_kernels(plan: Plan) -> dict:
    """Each attention call of a BiXT-Ti layer (head width 32, 64 latents, the tokens of the first
    size), per dtype: the kernel the profiler saw and the one ``sdpa_kernel`` predicts."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile
    from mmbixt.operations.attention_kernels import sdpa_kernel
    tokens = (plan.sizes[0] // 16) ** 2
    out = {}
    for dtype in [torch.float32] + plan.half_dtypes:
        lat = torch.randn(1, 6, 64, 32, device=plan.device, dtype=dtype)
        tok = torch.randn(1, 6, tokens, 32, device=plan.device, dtype=dtype)
        calls = {'latents read tokens': (lat, tok), 'tokens read latents': (tok, lat),
                 'latent self-attention': (lat, lat)}
        row = {}
        for name, (query, keys) in calls.items():
            with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
                F.scaled_dot_product_attention(query, keys, keys)
            seen = sorted({e.key for e in prof.key_averages()
                           if e.key.startswith('aten::_scaled_dot_product')
                           or e.key.startswith('aten::_efficient_attention')
                           or e.key.startswith('aten::_flash_attention')})
            row[name] = {'ran': seen[0] if seen else 'math (no fused kernel)',
                         'predicted': sdpa_kernel(plan.device, dtype, 32)}
        out[str(dtype).split('.')[-1]] = row
    return out


# ----------------------------------------------------------------------------- 4. throughput
def throughput(plan: Plan, bench) -> list[dict]:
    import torch
    from mmbixt.models.backbones import BiXTBackbone
    rows = []
    dtype = plan.half_dtypes[-1]
    for size in plan.sizes:
        batch = plan.batch_for(size)
        models = {'BiXT-Ti/16': BiXTBackbone(arch='bixt_ti_l64_d13_p16',
                                             out_indices=(3, 5, 7, 11)).eval(),
                  'ViT-Ti/16 (mmseg)': bench.vit_backbone(size)}
        for name, model in models.items():
            rows.append(dict(model=name, size=size, batch=batch,
                             **timed_forward(model.to(plan.device), size, batch, plan, dtype)))
            model.cpu()
    return rows


def timed_forward(model, size: int, batch: int, plan: Plan, dtype) -> dict:
    import torch
    img = torch.randn(batch, 3, size, size, device=plan.device)
    if plan.device == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        with torch.no_grad(), torch.autocast(plan.device, dtype=dtype):
            model(img)
            synchronize(plan.device)
            start = time.perf_counter()
            for _ in range(plan.rounds):
                model(img)
            synchronize(plan.device)
    except torch.OutOfMemoryError:
        return {'error': 'out of memory'}
    seconds = (time.perf_counter() - start) / plan.rounds
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if plan.device == 'cuda' else None
    return {'images_per_s': batch / seconds, 'peak_mb': peak,
            'dtype': str(dtype).split('.')[-1]}


# ----------------------------------------------------------------------------- 5. DDP
def ddp(plan: Plan) -> dict:
    """Training images/s of one process and of a 2-process DDP run (same per-process batch)."""
    if not plan.dry_run and plan.gpus < 2:
        return {'skipped': f'{plan.gpus} GPU visible: the DDP run needs two'}
    import torch.multiprocessing as mp
    single = ddp_worker_result(1, plan, mp)
    double = ddp_worker_result(2, plan, mp)
    return {'1 process images/s': single, '2 processes images/s': double,
            'scaling': double / single, 'backend': 'gloo (CPU dry run)' if plan.dry_run
            else 'nccl'}


def ddp_worker_result(world: int, plan: Plan, mp) -> float:
    results = mp.get_context('spawn').Manager().dict()
    port = _free_port()
    mp.spawn(ddp_worker, args=(world, port, plan.dry_run, results), nprocs=world, join=True)
    return sum(results.values())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def ddp_worker(rank: int, world: int, port: int, dry_run: bool, results) -> None:
    import torch
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    plan = Plan(dry_run)
    if not dry_run:
        torch.cuda.set_device(rank)
    dist.init_process_group('gloo' if dry_run else 'nccl', rank=rank, world_size=world)
    try:
        bench = benchmark_builders()
        torch.manual_seed(0)
        model = bench.segmentor('upernet', 'bixt', 16, plan.train_size)
        model = model.to('cpu' if dry_run else f'cuda:{rank}')
        device = 'cpu' if dry_run else 'cuda'
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=None if dry_run else [rank], find_unused_parameters=True)
        model.train()
        step = training_step(lambda images, samples: wrapped(images, samples, mode='loss'),
                             wrapped, plan, device, plan.half_dtypes[-1])
        step()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(plan.ddp_steps):
            step()
        synchronize(device)
        results[rank] = plan.train_batch * plan.ddp_steps / (time.perf_counter() - start)
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- report
def report_md(report: dict) -> str:
    lines = [f'# mmbixt GPU check: {report["device"]}', '', report['mode'], '']
    par = report.get('parity', {})
    if par:
        lines += ['## 1. Parity, CUDA fp32 against the CPU', '',
                  f'{_verdict(par)}: largest relative difference of the four output maps '
                  f'{par.get("max_rel_diff", float("nan")):.1e} (tolerance {PARITY_TOLERANCE:.0e}; '
                  f'{par.get("note", par.get("error", ""))})', '']
    amp = report.get('amp', {})
    if amp:
        lines += ['## 2. AMP training steps (UPerNet-BiXT-Ti/16, one fixed batch)', '',
                  '| dtype | first loss | last loss | finite | falling | |', '|---|---:|---:|---|---|---|']
        for dtype, run in amp.items():
            if 'losses' in run:
                lines.append(f'| {dtype} | {run["losses"][0]:.3f} | {run["losses"][-1]:.3f} | '
                             f'{run["finite"]} | {run["falling"]} | {_verdict(run)} |')
            else:
                lines.append(f'| {dtype} | | | | | error: {run.get("error")} |')
        lines.append('')
    kernels = report.get('sdpa', {})
    if kernels and 'error' not in kernels:
        lines += ['## 3. Fused-attention kernel per attention call (head width 32)', '',
                  '| dtype | call | kernel that ran | predicted (attention_kernels.sdpa_kernel) |',
                  '|---|---|---|---|']
        for dtype, calls in kernels.items():
            for call, row in calls.items():
                lines.append(f'| {dtype} | {call} | {row["ran"]} | {row["predicted"]} |')
        lines.append('')
    rows = report.get('throughput', [])
    if rows:
        lines += ['## 4. Backbone forward throughput and peak memory (autocast)', '',
                  '| model | input | batch | images/s | peak MB |', '|---|---|---:|---:|---:|']
        for row in rows:
            value = (f'{row["images_per_s"]:.1f} | {_mb(row["peak_mb"])}'
                     if 'images_per_s' in row else f'{row.get("error")} |')
            lines.append(f'| {row.get("model")} | {row.get("size")} | {row.get("batch")} | '
                         f'{value} |')
        lines.append('')
    if report.get('ddp'):
        lines += ['## 5. DDP, 2 processes against 1', '', _ddp_line(report['ddp']), '']
    return '\n'.join(lines)


def _mb(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.0f}'


def _verdict(result: dict) -> str:
    return 'PASS' if result.get('ok') else 'MISS'


def _ddp_line(result: dict) -> str:
    if 'skipped' in result or 'error' in result:
        return result.get('skipped') or f'error: {result["error"]}'
    return (f'{result["1 process images/s"]:.1f} images/s on 1 process, '
            f'{result["2 processes images/s"]:.1f} on 2 ({result["scaling"]:.2f}x; '
            f'{result["backend"]})')


def guarded(fn: Callable, *args):
    """A part's result, or its error (the other parts still run)."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001  (reported in the report)
        return {'error': f'{type(exc).__name__}: {exc}'[:300]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--dry-run', action='store_true',
                        help='tiny sizes on the CPU (the default when no GPU is visible)')
    parser.add_argument('--out', type=Path, default=REPO / 'work_dirs' / 'gpu_check')
    args = parser.parse_args(argv)
    import torch
    has_gpu = torch.cuda.is_available()
    plan = Plan(dry_run=args.dry_run or not has_gpu)
    device = torch.cuda.get_device_name(0) if has_gpu else 'no GPU found'
    mode = ('dry run on the CPU with tiny sizes' + ('' if has_gpu else ': no GPU was found, '
            'so nothing here says anything about a GPU') if plan.dry_run
            else f'{plan.gpus} GPU(s) visible, torch {torch.__version__}')
    print(f'mmbixt GPU check: {device}; {mode}', flush=True)
    bench = benchmark_builders()
    started = time.perf_counter()
    report = {'device': device, 'mode': mode, 'dry_run': plan.dry_run}
    parts = {'parity': (parity, plan), 'amp': (amp_training, plan, bench),
             'sdpa': (sdpa_kernels, plan), 'throughput': (throughput, plan, bench),
             'ddp': (ddp, plan)}
    for name, (fn, *fn_args) in parts.items():
        part_start = time.perf_counter()
        report[name] = guarded(fn, *fn_args)
        print(f'  {name}: {time.perf_counter() - part_start:.0f} s', flush=True)
    report['seconds'] = time.perf_counter() - started
    text = report_md(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'report.md').write_text(text + '\n')
    (args.out / 'report.json').write_text(json.dumps(report, indent=1, default=str))
    print('\n' + text + f'\nwrote {args.out / "report.md"} in {report["seconds"]:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
