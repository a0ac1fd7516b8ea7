"""Convert a released BiXT checkpoint (the zip as downloaded, or the .pth.tar inside) into a plain
mmseg-ready .pth holding only the backbone weights and a meta block naming source and variant.

    python tools/convert_checkpoint.py checkpoints/bixt_ti_l64_d13_p16.zip \\
        checkpoints/bixt_ti_l64_d13_p16_backbone.pth [--arch NAME] [--use-ema]

The result loads with ``init_cfg=dict(type='Pretrained', checkpoint=OUT)`` and holds only tensors.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

import mmbixt  # noqa: E402
from mmbixt.archs import RELEASED_ARCHS, canonical_name, variant_of_name  # noqa: E402
from mmbixt.checkpoint import BiXTWeights, CheckpointError  # noqa: E402


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def check_stored_name(weights: BiXTWeights, name: str) -> None:
    """Refuses to store ``name`` on weights that reveal another model: for a released name every
    check of the loading policy (tokenizer, width, heads, LayerScale), else its variant."""
    released = RELEASED_ARCHS.get(name)
    if released is not None:
        problems = weights.arch_problems(released, name)
        if problems:
            raise CheckpointError(weights.path, '; '.join(problems),
                                  'Drop --arch, or name the variant the file holds')
    elif variant_of_name(name):
        weights.check_variant(*variant_of_name(name), name)


def convert(src: str, dst: str, arch: str | None = None, use_ema: bool = False) -> dict:
    """Writes the converted checkpoint to ``dst`` (atomically) and returns its meta block."""
    weights = BiXTWeights.from_file(src, use_ema=use_ema)
    name = canonical_name(arch) if arch else weights.model_name
    if arch:  # the name to store must agree with everything the file reveals
        check_stored_name(weights, name)
    state = weights.backbone_state_dict()
    meta = dict(bixt_arch=name, source=osp.basename(src), source_sha256=sha256(src),
                bidirectional_layers=weights.bidirectional_layers, ema=use_ema,
                mmbixt_version=mmbixt.__version__)
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    partial = dst + '.partial'
    torch.save({'state_dict': state, 'meta': meta}, partial)
    os.replace(partial, dst)
    return meta


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='released checkpoint: zip as downloaded, or .pth.tar')
    parser.add_argument('dst', help='output .pth')
    parser.add_argument('--arch', help='released name, when the file does not store one')
    parser.add_argument('--use-ema', action='store_true', help='convert the EMA weights')
    args = parser.parse_args(argv)
    try:
        meta = convert(args.src, args.dst, args.arch, args.use_ema)
    except CheckpointError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f"Wrote {args.dst}: {meta['bixt_arch'] or 'unnamed BiXT'}, "
          f"{meta['bidirectional_layers']} bi-directional layers, from {meta['source']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
