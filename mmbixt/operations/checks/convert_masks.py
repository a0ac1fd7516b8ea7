"""Palette-coloured label maps to class ids (``tools/convert_masks.py``): each pixel's colour is
looked up in the config's palette (colour ``i`` becomes class ``i``, stored as ``i + 1`` under
``reduce_zero_label``); a colour outside the palette is refused naming the file, the pixel and the
colour. Every map is written atomically, never over its input unless asked."""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np
from mmengine.config import DictAction
from PIL import Image

from ...datasets.seg_files import SegDataError
from ..engine.config_file import read_config
from ..fileio import atomic_write

SPLITS = ('train', 'val', 'test')


def colour_ids(image: np.ndarray, palette: Sequence[Sequence[int]], path: str,
               ignore: Sequence[Sequence[int]] = (), ignore_index: int = 255,
               shift: int = 0) -> np.ndarray:
    """The class id of each pixel of an RGB ``image`` ``[H, W, 3]`` (palette index + ``shift``;
    ``ignore`` colours become ``ignore_index``); a colour in neither is refused naming ``path``,
    the first such pixel (x, y) and how many pixels have such colours."""
    codes = (image[..., 0].astype(np.int64) << 16) | (image[..., 1].astype(np.int64) << 8) \
        | image[..., 2].astype(np.int64)
    table = {}
    for index, colour in enumerate(palette):
        table.setdefault((colour[0] << 16) | (colour[1] << 8) | colour[2], index + shift)
    for colour in ignore:
        table[(colour[0] << 16) | (colour[1] << 8) | colour[2]] = ignore_index
    keys = np.array(sorted(table), dtype=np.int64)
    values = np.array([table[key] for key in keys], dtype=np.int64)
    slots = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
    known = keys[slots] == codes
    if not known.all():
        y, x = (int(v[0]) for v in np.nonzero(~known))
        colour = tuple(int(v) for v in image[y, x, :3])
        raise SegDataError(
            f'{path}: pixel (x={x}, y={y}) has colour {colour}, which is not in the palette '
            f'({int((~known).sum())} pixels have colours outside it): add the colour to the '
            'palette (a class), or pass --ignore-colour '
            f'{",".join(map(str, colour))} to mark it ignored (255)')
    return values[slots].astype(np.uint8)


def label_folders(cfg, splits: Sequence[str]) -> list[tuple[str, str, dict]]:
    """``(split, label folder, dataset settings)`` of each split's dataset in the config."""
    found = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        dataset = (loader or {}).get('dataset') or {}
        prefix = dataset.get('data_prefix') or {}
        if not prefix.get('seg_map_path'):
            continue
        folder = osp.join(dataset.get('data_root') or '', prefix['seg_map_path'])
        if all(folder != seen for _, seen, _ in found):
            found.append((split, folder, dataset))
    return found


def convert_file(source: str, target: str, palette, ignore, shift: int) -> str:
    """Writes the class ids of the colour map ``source`` to ``target``; what was done, in words."""
    with Image.open(source) as image:
        if image.mode in ('L', 'I;16', 'I', '1') or (image.mode == 'P' and not palette):
            return 'already class ids'
        rgb = np.asarray(image.convert('RGB'))
    ids = colour_ids(rgb, palette, source, ignore, shift=shift)
    with atomic_write(target) as tmp:
        Image.fromarray(ids).save(tmp, format='PNG')
    return 'converted'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Turn palette-coloured label maps into class ids')
    parser.add_argument('config', help='the config: its datasets\' label folders and palette')
    parser.add_argument('--splits', nargs='+', default=list(SPLITS))
    parser.add_argument('--out-dir', help='write the converted maps here (the label folders\' '
                        'layout below it); default: none, --overwrite converts in place')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace each colour map by its class ids (each file atomically)')
    parser.add_argument('--ignore-colour', action='append', default=[], metavar='R,G,B',
                        help='a colour that marks ignored pixels (255), e.g. borders; repeatable')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    return parser.parse_args(argv)


def parse_colour(text: str) -> tuple[int, int, int]:
    parts = text.split(',')
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) < 256 for p in parts):
        raise SegDataError(f'--ignore-colour {text}: give a colour as R,G,B (0..255 each)')
    return tuple(int(p) for p in parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if bool(args.out_dir) == args.overwrite:
        raise SegDataError('choose where the class ids go: --out-dir DIR (the colour maps stay) '
                           'or --overwrite (each colour map is replaced, atomically)')
    cfg = read_config(args.config)
    cfg.merge_from_dict(args.cfg_options)
    ignore = [parse_colour(text) for text in args.ignore_colour]
    folders = label_folders(cfg, args.splits)
    if not folders:
        raise SegDataError(f'{args.config}: no dataset of the splits {", ".join(args.splits)} '
                           'names a label folder (data_prefix seg_map_path)')
    for split, folder, dataset in folders:
        palette = (dataset.get('metainfo') or {}).get('palette') or cfg.get('palette')
        if not palette:
            raise SegDataError(f'{args.config}: the {split} dataset has no palette (metainfo '
                               'palette): the colours of the classes are needed')
        shift = 1 if dataset.get('reduce_zero_label') else 0
        suffix = dataset.get('seg_map_suffix', '.png')
        root = dataset.get('data_root') or '.'
        done = {'converted': 0, 'already class ids': 0}
        for parent, _, names in os.walk(folder):
            for name in sorted(n for n in names if n.endswith(suffix)):
                source = osp.join(parent, name)
                # --out-dir mirrors the layout below data_root (set data_prefix seg_map_path to it)
                target = (source if args.overwrite else
                          osp.join(args.out_dir, osp.relpath(source, root)))
                done[convert_file(source, target, palette, ignore, shift)] += 1
        where = f' into {osp.join(args.out_dir, osp.relpath(folder, root))}' if args.out_dir else ''
        print(f'{split}: {folder}: {done["converted"]} colour maps converted{where}, '
              f'{done["already class ids"]} already class ids', flush=True)
    return 0
