"""Speed and outputs of mmbixt against the original BiXT implementation, on the same weights.

    git clone https://github.com/mrkshllr/BiXT /path/to/BiXT      # the original (a timm fork)
    python tools/compare_original.py --original /path/to/BiXT [--arch bixt_ti_l64_d13_p16s4]
        [--sizes 512 1024] [--rounds 6] [--threads 2]

The original's 12 bi-directional layers (its own classes, from the given clone) and ``BiXTBackbone``
run interleaved in one process with the original's random weights copied into mmbixt; prints the
best time of each and the largest relative difference of the 12 layers' tokens. Only linear
tokenisers (p16, p16s8, p16s4) are compared.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time
from typing import Callable

import torch


def import_original(repo: str):
    """The original's ``BiXT`` and patch embeddings, imported from its timm fork, after which the
    installed timm is restored for mmbixt."""
    if not osp.isfile(osp.join(repo, 'timm', 'models', 'bixt.py')):
        sys.exit(f'error: {repo} is not a clone of the original BiXT repository '
                 '(no timm/models/bixt.py)')
    sys.path.insert(0, repo)
    from timm import layers
    from timm.models.bixt import BiXT
    embeds = {16: layers.PatchEmbed, 8: layers.PatchEmbedHalfStride, 4: layers.PatchEmbedQuarterStride}
    sys.path.remove(repo)
    for name in [m for m in sys.modules if m == 'timm' or m.startswith('timm.')]:
        del sys.modules[name]
    return BiXT, embeds


def original_runner(BiXT, embed, size: int) -> tuple[torch.nn.Module, Callable]:
    model = BiXT(img_size=size, patch_size=16, embed_dim_lat=192, embed_dim_pat=192, depth=13,
                 sa_num_heads=6, ca_num_heads=6, num_latents=64, embed_layer=embed,
                 posenc_type_pat='fourier2d_embadd_proj').eval()

    def run(img: torch.Tensor) -> list:
        tokens, latents, outs = model.encode_pat(img), model.latents, []
        for block in model.blocks[:12]:  # the dense backbone: the 12 bi-directional layers
            latents, tokens = block((latents, tokens))
            outs.append(tokens)
        return outs
    return model, run


def best_times(functions: dict, rounds: int) -> dict:
    best = dict.fromkeys(functions, float('inf'))
    with torch.no_grad():
        for name, fn in functions.items():
            fn()  # warm-up
        for _ in range(rounds):
            for name, fn in functions.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], (time.perf_counter() - start) * 1000)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--original', required=True, help='a clone of the original BiXT repo')
    parser.add_argument('--arch', default='bixt_ti_l64_d13_p16',
                        choices=['bixt_ti_l64_d13_p16', 'bixt_ti_l64_d13_p16s8',
                                 'bixt_ti_l64_d13_p16s4'])
    parser.add_argument('--sizes', type=int, nargs='+', default=[512, 1024])
    parser.add_argument('--rounds', type=int, default=6)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    BiXT, embeds = import_original(args.original)
    from mmbixt.checkpoint import CLASSIFIER_ONLY, FIXED_POS_BUFFER, remap_released
    from mmbixt.models.backbones import BiXTBackbone

    for size in args.sizes:
        ours = BiXTBackbone(arch=args.arch, out_indices=tuple(range(12)), out_norm=False).eval()
        theirs, run_theirs = original_runner(BiXT, embeds[ours.stride], size)
        # The one remap of the released layout; the classifier parts and layer 12 go unused.
        state = {k: v for k, v in remap_released(theirs.state_dict()).items()
                 if not k.startswith(CLASSIFIER_ONLY + ('core.blocks.12.', FIXED_POS_BUFFER))}
        ours.load_state_dict(state)
        img = torch.randn(1, 3, size, size)
        with torch.no_grad():
            error = max(((mine.flatten(2).transpose(1, 2) - ref).abs().max() / ref.abs().max()).item()
                        for ref, mine in zip(run_theirs(img), ours(img)))
        best = best_times({'original': lambda: run_theirs(img), 'mmbixt': lambda: ours(img)},
                          args.rounds)
        print(f"{args.arch} {size}x{size}: original {best['original']:.0f} ms, mmbixt "
              f"{best['mmbixt']:.0f} ms ({best['original'] / best['mmbixt']:.2f}x), largest relative "
              f"difference of the 12 layers' tokens {error:.1e}", flush=True)


if __name__ == '__main__':
    main()
