"""Convert a released BiXT checkpoint (the zip as downloaded, or the .pth.tar inside) into a plain
mmseg-ready .pth holding only the backbone weights and a meta block naming source and variant.

    python tools/convert_checkpoint.py checkpoints/bixt_ti_l64_d13_p16.zip \\
        checkpoints/bixt_ti_l64_d13_p16_backbone.pth [--arch NAME] [--use-ema] [--overwrite]

The result loads with ``init_cfg=dict(type='Pretrained', checkpoint=OUT)``, holds only tensors and
keeps what reveals the token stride (the released name, the fixed ``pos`` grid, ``token_stride``),
so it is checked as strictly as the file it came from. It never writes over its input, and over an
existing output only with ``--overwrite``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os.path as osp
import sys
from typing import Optional, Union

import torch

import mmbixt
from mmbixt.archs import RELEASED_ARCHS, BiXTArch, canonical_name, resolve_arch
from mmbixt.checkpoint import FIXED_POS_BUFFER, BiXTWeights, CheckpointError
from mmbixt.operations.fileio import atomic_write
from mmbixt.operations.cli import parse_arch, run_cli


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_arch_option(arch: Union[str, dict, None]) -> tuple[Optional[BiXTArch], Optional[str]]:
    """``--arch``: a released name (either spelling) or an arch dict -> (arch, released name);
    anything else is refused, since a made-up name would skip the stride check on loading."""
    if arch is None:
        return None, None
    if isinstance(arch, str) and canonical_name(arch) not in RELEASED_ARCHS:
        raise CheckpointError('--arch', f'{arch!r} is not a released BiXT name', 'Give one of '
                              + ', '.join(sorted(RELEASED_ARCHS)) + ', or a JSON dict of '
                              'embed_dims, num_heads, num_latents, num_layers, tokenizer, '
                              'patch_size, stride, layer_scale')
    try:
        return resolve_arch(arch)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError('--arch', f'is not a valid arch ({err})',
                              'Give a released name or a JSON dict of the arch keys') from None


def check_stored_arch(weights: BiXTWeights, arch: BiXTArch, hint: str) -> None:
    """Refuses to store ``arch`` on weights that reveal another model (every check of the loading
    policy: tokenizer and stride, width, heads, LayerScale)."""
    problems = weights.arch_problems(arch, hint)
    if problems:
        raise CheckpointError(weights.path, '; '.join(problems),
                              'Drop --arch, or name the model the file holds')


def check_destination(src: str, dst: str, overwrite: bool) -> None:
    """Refuses to write over the input, into a folder, or over a file without ``overwrite``."""
    if not osp.exists(dst):
        return
    if osp.isdir(dst):
        raise CheckpointError(dst, 'is a folder', 'Give the path of the .pth file to write')
    if osp.exists(src) and osp.samefile(src, dst):
        raise CheckpointError(dst, 'is the input checkpoint itself: converting would destroy it',
                              'Give another output path')
    if not overwrite:
        raise CheckpointError(dst, 'already exists', 'Pass --overwrite to replace it, or give '
                              'another output path')


def convert(src: str, dst: str, arch: Union[str, dict, None] = None, use_ema: bool = False,
            overwrite: bool = False) -> dict:
    """Writes the converted checkpoint to ``dst`` (atomically) and returns its meta block."""
    check_destination(src, dst, overwrite)
    chosen, released_name = resolve_arch_option(arch)
    weights = BiXTWeights.from_file(src, use_ema=use_ema)
    if chosen is not None:  # what to store must agree with everything the file reveals
        check_stored_arch(weights, chosen, released_name or 'the --arch dict')
    name = released_name or (weights.model_name if chosen is None else None)
    state = weights.backbone_state_dict()
    if FIXED_POS_BUFFER in weights.state_dict:  # its grid reveals the token stride
        state[FIXED_POS_BUFFER] = weights.state_dict[FIXED_POS_BUFFER]
    stride = chosen.stride if chosen is not None else weights.known_stride
    stride = int(stride) if stride is not None and float(stride).is_integer() else None
    meta = dict(bixt_arch=name, token_stride=stride, source=osp.basename(src),
                source_sha256=sha256(src), bidirectional_layers=weights.bidirectional_layers,
                ema=use_ema, mmbixt_version=mmbixt.__version__)
    if isinstance(arch, dict):
        meta['arch'] = dict(arch)
    with atomic_write(dst) as tmp:
        torch.save({'state_dict': state, 'meta': meta}, tmp)
    return meta


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='released checkpoint: zip as downloaded, or .pth.tar')
    parser.add_argument('dst', help='output .pth (never the input; existing only with --overwrite)')
    parser.add_argument('--arch', help='released name, when the file does not store one, or a '
                        'JSON dict of the arch keys (mmbixt.archs.ARCH_DICT_KEYS)')
    parser.add_argument('--use-ema', action='store_true', help='convert the EMA weights')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    args = parser.parse_args(argv)
    try:
        arch = parse_arch(args.arch)
    except json.JSONDecodeError as err:
        print(f'error: --arch {args.arch!r} is not valid JSON ({err}). Give a released name or a '
              'JSON dict', file=sys.stderr)
        return 1
    try:
        meta = convert(args.src, args.dst, arch, args.use_ema, args.overwrite)
    except CheckpointError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f"Wrote {args.dst}: {meta['bixt_arch'] or 'unnamed BiXT'}, "
          f"{meta['bidirectional_layers']} bi-directional layers, token stride "
          f"{meta['token_stride'] or 'unknown'}, from {meta['source']}")
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
