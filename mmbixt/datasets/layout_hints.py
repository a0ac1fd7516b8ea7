"""What the files of a split reveal about the settings that name them: the ``img_suffix`` the
images have, the ``seg_map_suffix`` their label maps have (``0001.jpg`` -> ``0001_mask.png``), the
``data_prefix`` folders that do exist. One hint line replaces a list of every unmatched file."""
from __future__ import annotations

import os
import os.path as osp
from collections import Counter
from typing import Iterable, Optional

SHOWN_FOLDERS = 6


def suffix_counts(folder: str) -> Counter:
    """How many files below ``folder`` end in each extension (``.jpg``: 40)."""
    return Counter(osp.splitext(name)[1] for _, _, names in os.walk(folder) for name in names)


def relative_files(folder: str) -> list[str]:
    """Every file below ``folder``, relative to it, sorted."""
    return sorted(osp.relpath(osp.join(parent, name), folder)
                  for parent, _, names in os.walk(folder) for name in names)


def empty_split_message(img_dir: str, img_suffix: str) -> str:
    """Why a split folder gave no samples: the suffixes its files do have, and the setting to
    change (with the suffix to set when one kind of file dominates)."""
    counts = suffix_counts(img_dir)
    found = ', '.join(f'{count} {suffix or "(none)"}' for suffix, count in counts.most_common(4))
    image_suffixes = [s for s, _ in counts.most_common() if s.lower() in IMAGE_SUFFIXES]
    example = f", e.g. img_suffix='{image_suffixes[0]}'" if image_suffixes else ''
    message = (f"0 images with suffix {img_suffix} under {img_dir}: set the dataset's img_suffix "
               f"to the images' suffix{example} (found: {found or 'no files'})")
    subfolders = [name for name in sorted(os.listdir(img_dir))
                  if osp.isdir(osp.join(img_dir, name))] if osp.isdir(img_dir) else []
    if not counts.get(img_suffix) and subfolders and not image_suffixes:
        message += (f'; or set data_prefix img_path to the folder holding them ({img_dir} has '
                    f'folders {", ".join(subfolders[:SHOWN_FOLDERS])})')
    return message


IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def missing_folder_message(folder: str, setting: str, data_root: Optional[str]) -> str:
    """A split folder that does not exist: the setting that names it and the folders that do
    exist where it was looked for (the nearest existing parent's folders)."""
    parent = osp.dirname(osp.normpath(folder))
    while parent and not osp.isdir(parent):
        parent = osp.dirname(parent)
    message = f'split folder {folder} does not exist (data_prefix {setting}'
    message += f' under data_root {data_root})' if data_root else ')'
    if parent:
        names = sorted(name for name in os.listdir(parent) if osp.isdir(osp.join(parent, name)))
        leaf = osp.basename(osp.normpath(folder))
        near = [osp.join(parent, name) for name in names
                if osp.isdir(osp.join(parent, name, leaf))]
        if near:
            message += f'; {leaf} exists in {", ".join(near[:3])}: set data_prefix {setting} to it'
        elif names:
            message += f'; {parent} holds {", ".join(names[:SHOWN_FOLDERS])}'
    return message


def seg_map_suffix_hint(image_stems: Iterable[str], ann_dir: str, seg_map_suffix: str
                        ) -> Optional[str]:
    """The ``seg_map_suffix`` under which the label maps of ``ann_dir`` match most of the images
    (``0001`` + ``_mask.png``), when it is not the configured one and matches at least half of
    them; else None."""
    stems = set(image_stems)
    if not stems or not osp.isdir(ann_dir):
        return None
    candidates: Counter = Counter()
    for name in relative_files(ann_dir):
        for cut in range(1, len(name)):
            if name[:cut] in stems:
                candidates[name[cut:]] += 1
                break
    if not candidates:
        return None
    suffix, count = candidates.most_common(1)[0]
    if suffix == seg_map_suffix or 2 * count < len(stems):
        return None
    return suffix


def unmatched_labels_message(missing: int, total: int, img_dir: str, ann_dir: str,
                             seg_map_suffix: str, suggested: str, example: str) -> str:
    """The one line that replaces a line per image without its label map."""
    return (f'{missing} of {total} images under {img_dir} have no label map <name>{seg_map_suffix} '
            f'under {ann_dir}, but the label maps there are named <name>{suggested} (e.g. '
            f"{example}): set the dataset's seg_map_suffix='{suggested}'")
