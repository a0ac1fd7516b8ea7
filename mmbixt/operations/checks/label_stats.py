"""Label statistics of a split: the share of each class among the labelled pixels (after
``reduce_zero_label``), and warnings for the mistakes that pass every file check in silence: a
class that never occurs, and ``reduce_zero_label`` ignoring the most frequent value (0 being a real
class). Used by ``tools/check_dataset.py`` and, briefly, at the start of a training."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

VALUES = 65536  # a label file stores 8- or 16-bit values
SHOWN_CLASSES = 12


@dataclass
class SplitLabels:
    """Pixel counts per stored label value of the label maps of one split."""
    name: str
    classes: Sequence[str]
    reduce_zero_label: bool
    ignore_index: int = 255
    counts: np.ndarray = field(default_factory=lambda: np.zeros(VALUES, np.int64))
    label_maps: int = 0
    total: int = 0  # label maps in the split (more than were read when a cap applies)

    def add(self, values: np.ndarray) -> None:
        """Counts the values of one label map (as stored in the file)."""
        self.counts += np.bincount(values.ravel().astype(np.int64), minlength=VALUES)[:VALUES]
        self.label_maps += 1

    def merge(self, counts: np.ndarray, label_maps: int) -> None:
        self.counts += counts
        self.label_maps += label_maps

    @property
    def shift(self) -> int:
        return 1 if self.reduce_zero_label else 0

    def class_pixels(self) -> np.ndarray:
        """Pixels of each class (stored value ``i + shift`` is class ``i``)."""
        return self.counts[self.shift:self.shift + len(self.classes)]

    def ignored_values(self) -> dict[int, int]:
        """Pixels of each value that is no class (255, and 0 under ``reduce_zero_label``)."""
        values = [self.ignore_index] + ([0] if self.reduce_zero_label else [])
        return {value: int(self.counts[value]) for value in values if self.counts[value]}


def class_share_line(stats: SplitLabels) -> str:
    """One line: each class's share of the labelled pixels, and the ignored pixels."""
    pixels = stats.class_pixels()
    labelled = int(pixels.sum())
    read = (f'{stats.label_maps} label maps' if stats.label_maps == stats.total else
            f'{stats.label_maps} of {stats.total} label maps (evenly spread)')
    if not labelled:
        return f'{stats.name}: {read}, no labelled pixel'
    shares = [f'{name} {100 * count / labelled:.1f}%' for name, count in
              zip(stats.classes, pixels.tolist())]
    if len(shares) > SHOWN_CLASSES:
        shares = shares[:SHOWN_CLASSES] + [f'... ({len(shares) - SHOWN_CLASSES} more)']
    total = labelled + sum(stats.ignored_values().values())
    ignored = ', '.join(f'value {value} {100 * count / total:.1f}%'
                        for value, count in stats.ignored_values().items())
    zero = ', reduce_zero_label' if stats.reduce_zero_label else ''
    return (f'{stats.name}: {read}; class shares of the labelled pixels{zero}: '
            f'{", ".join(shares)}' + (f'; ignored: {ignored} of all pixels' if ignored else ''))


def label_warnings(stats: SplitLabels) -> list[str]:
    """The silent mistakes the counts reveal: classes that never occur in the split, and
    ``reduce_zero_label`` ignoring the most frequent value."""
    found = []
    if not stats.label_maps:
        return found
    absent = [f"'{name}' (value {index + stats.shift})" for index, (name, count) in
              enumerate(zip(stats.classes, stats.class_pixels().tolist())) if not count]
    if absent:
        found.append(
            f'{stats.name}: {"classes" if len(absent) > 1 else "class"} {", ".join(absent)} '
            f'never {"occur" if len(absent) > 1 else "occurs"} in its {stats.label_maps} label '
            'maps: check the classes, their order and reduce_zero_label (the validation table '
            'marks such classes "absent")')
    if stats.reduce_zero_label:
        kept = stats.counts.copy()
        kept[stats.ignore_index] = 0
        if kept[0] and int(np.argmax(kept)) == 0:
            share = 100 * kept[0] / kept.sum()
            found.append(
                f'{stats.name}: reduce_zero_label=True ignores value 0, the most frequent value '
                f'({share:.0f}% of the pixels that are not {stats.ignore_index}): if 0 is a class '
                '(e.g. background), set reduce_zero_label=False and name it first in classes')
    return found


def label_report(stats: SplitLabels) -> tuple[str, list[str]]:
    """The class-share line and the warnings of a split."""
    return class_share_line(stats), label_warnings(stats)


def split_name(dataset, default: str) -> str:
    """A split's name for the report: its label folder (or split list), else ``default``."""
    prefix = getattr(dataset, 'data_prefix', None) or {}
    where = prefix.get('seg_map_path') or getattr(dataset, 'ann_file', None)
    return f'{default} ({where})' if where else default


def spread_indices(count: int, limit: Optional[int]) -> list[int]:
    """``limit`` indices spread evenly over ``range(count)`` (all of them without a limit)."""
    if limit is None or count <= limit:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, limit)}) if limit > 0 else []
