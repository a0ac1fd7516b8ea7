"""PyTorch fp32, PyTorch bf16 autocast and ONNX Runtime on the same model and input, interleaved.

    python tools/onnx_speed.py [--sizes 512 1024] [--rounds 5] [--threads 2]
        [--models backbone upernet fpn]

Models (random weights; speed does not depend on them): the BiXT-Ti/16 backbone (its four feature
maps from a normalised image) and the deployed graphs of UPerNet and Semantic FPN with BiXT-Ti/16
(``configs/bixt/upernet_bixt_ti_ade20k.py``, ``fpn_bixt_ti_ade20k.py``: a 0..255 BGR image in,
logits at the image size and the class map out), batch 1, CPU. Each round calls every runtime
once in turn; prints the median milliseconds and the ratio to PyTorch fp32 as a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import statistics

import torch

import mmbixt  # noqa: F401  (registers modules)
from mmbixt.operations.deploy.onnx import (ImageSegmentorGraph, interleaved_ms,
                                load_segmentor, ort_session)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SEGMENTORS = {'upernet': ('UPerNet BiXT-Ti/16', 'upernet_bixt_ti_ade20k.py'),
              'fpn': ('Semantic FPN BiXT-Ti/16', 'fpn_bixt_ti_ade20k.py')}


def models(chosen: list[str]) -> dict[str, tuple[torch.nn.Module, bool]]:
    """name -> (module, takes a 0..255 image)."""
    from mmbixt.models.backbones import BiXTBackbone
    out = {}
    if 'backbone' in chosen:
        out['BiXT-Ti/16 backbone'] = (BiXTBackbone(arch='bixt_ti_l64_d13_p16').eval(), False)
    for key, (name, config) in SEGMENTORS.items():
        if key in chosen:
            loaded = load_segmentor(osp.join(REPO, 'configs', 'bixt', config))
            out[name] = (ImageSegmentorGraph(loaded.model, loaded.preprocessing).eval(), True)
    return out


def runtimes(module: torch.nn.Module, x: torch.Tensor, threads: int) -> dict:
    run_ort = ort_session(module, tuple(x.shape[-2:]), threads=threads)

    def pytorch(bf16: bool):
        def call():
            with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
                return module(x)
        return call
    return {'PyTorch fp32': pytorch(False), 'PyTorch bf16': pytorch(True),
            'ONNX Runtime': lambda: run_ort(x)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[512])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--models', nargs='+', default=['backbone', *SEGMENTORS],
                        choices=['backbone', *SEGMENTORS])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f'batch 1, {args.threads} threads, median of {args.rounds} interleaved rounds (ms); '
          'in brackets the time relative to PyTorch fp32; load average '
          f'{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start')
    print('| model | size | PyTorch fp32 | PyTorch bf16 autocast | ONNX Runtime fp32 |')
    print('|---|---|---|---|---|')
    for name, (module, takes_image) in models(args.models).items():
        for size in args.sizes:
            x = torch.rand(1, 3, size, size) * 255 if takes_image else torch.randn(1, 3, size, size)
            times = interleaved_ms(runtimes(module, x, args.threads), args.rounds)
            medians = {k: statistics.median(v) for k, v in times.items()}
            base = medians['PyTorch fp32']
            cells = [f'{ms:.0f} ({ms / base:.2f}x)' for ms in medians.values()]
            print(f'| {name} | {size} | ' + ' | '.join(cells) + ' |', flush=True)


if __name__ == '__main__':
    main()
