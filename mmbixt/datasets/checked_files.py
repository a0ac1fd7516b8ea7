"""``CheckedSegFiles``: the early, file-naming checks every mmbixt segmentation dataset shares
(``BiXTADE20KDataset``, ``BiXTSegDataset``, your own ``BaseSegDataset`` subclass)."""
from __future__ import annotations

import os
import os.path as osp
from typing import Callable, Optional

from ..sizes import check_pipeline_crop_sizes
from .image_files import not_a_regular_file
from .layout_hints import (empty_split_message, missing_folder_message, seg_map_suffix_hint,
                           unmatched_labels_message)
from .sample_checks import check_sample_files
from .seg_files import SegDataError, check_label_file, unlabelled_split_problem


def sample_files(results: dict) -> str:
    files = [results.get('img_path'), results.get('seg_map_path')]
    return ' / '.join(str(f) for f in files if f)


def files_under(folder: str, suffix: str) -> set[str]:
    """Paths below ``folder`` (relative, without ``suffix``) of the files ending in ``suffix``."""
    found = set()
    for parent, _, names in os.walk(folder):
        for name in names:
            if name.endswith(suffix):
                found.add(osp.relpath(osp.join(parent, name), folder)[:-len(suffix)])
    return found


def first_problem(problems: list[str]) -> SegDataError:
    """The error for the first of a split's problems, saying how many more there are."""
    more = len(problems) - 1
    return SegDataError(problems[0] + (f' (and {more} more problems: tools/check_dataset.py '
                                       'lists them all)' if more else ''))


def checked_split(dataset, list_samples: Callable[[], list[dict]],
                  layout_hint: str = 'set data_root to the folder holding the data_prefix folders'
                  ) -> tuple[list[dict], list[str]]:
    """The samples of any mmseg ``BaseSegDataset`` (``list_samples``: its ``load_data_list``)
    whose files are complete, and a line per problem of the split: a missing data root, split
    folder or split list, an empty split (with the suffixes found), duplicate entries of a split
    list, images without label maps (one hint line when the label maps there reveal the
    ``seg_map_suffix``), label maps without images, a split that labels no pixel."""
    if dataset.data_root and not osp.isdir(dataset.data_root):
        raise SegDataError(f'data root {dataset.data_root} does not exist ({layout_hint})')
    img_dir = dataset.data_prefix.get('img_path', '')
    ann_dir = dataset.data_prefix.get('seg_map_path')
    for folder, setting in ((img_dir, 'img_path'), (ann_dir, 'seg_map_path')):
        if folder and not osp.isdir(folder):
            raise SegDataError(missing_folder_message(folder, setting, dataset.data_root))
    if dataset.ann_file and not osp.isdir(dataset.ann_file) and not osp.isfile(dataset.ann_file):
        raise SegDataError(f'split list {dataset.ann_file} does not exist')
    if dataset.ann_file and osp.isfile(dataset.ann_file):
        duplicate = duplicate_entries(dataset.ann_file)
        if duplicate:
            raise SegDataError(duplicate)
    data_list = list_samples()
    if not data_list:
        raise SegDataError(f'split list {dataset.ann_file} names no images' if dataset.ann_file
                           else empty_split_message(img_dir, dataset.img_suffix))
    complete, problems = layout_problems(dataset, data_list, img_dir, ann_dir)
    unlabelled = unlabelled_split_problem(
        ann_dir or dataset.ann_file, [info['seg_map_path'] for info in complete
                                      if info.get('seg_map_path')],
        bool(dataset.reduce_zero_label), dataset.ignore_index)
    return complete, problems + ([unlabelled] if unlabelled else [])


def duplicate_entries(split_list: str) -> Optional[str]:
    """The problem of a split list that names a sample more than once (it would be trained on,
    and scored, twice as often), with the lines; None otherwise."""
    lines: dict[str, list[int]] = {}
    with open(split_list, encoding='utf-8', errors='replace') as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                lines.setdefault(line.strip(), []).append(number)
    repeated = {name: numbers for name, numbers in lines.items() if len(numbers) > 1}
    if not repeated:
        return None
    name, numbers = next(iter(repeated.items()))
    more = f' ({len(repeated) - 1} more entries repeat)' if len(repeated) > 1 else ''
    return (f'split list {split_list}: {name!r} is listed {len(numbers)} times (lines '
            f'{", ".join(map(str, numbers[:5]))}){more}; each sample once, or it weighs double in '
            'training and evaluation: remove the repeated lines')


def layout_problems(dataset, data_list: list[dict], img_dir: str, ann_dir: Optional[str]
                    ) -> tuple[list[dict], list[str]]:
    """The samples whose image and label map are both readable files, and a line per missing
    one: absent, a FIFO, a dangling symbolic link (mmseg's folder listing passes over the last
    two in silence, and their label maps with them). When most images lack their label map and
    the label maps there are named with another suffix, one line names it instead."""
    problems, complete, unmatched = [], [], []
    for info in data_list:
        image_reason = not_a_regular_file(info['img_path'])  # only with a split list
        label_reason = info.get('seg_map_path') and not_a_regular_file(info['seg_map_path'])
        if image_reason:
            problems.append(f'{info["img_path"]}: listed in {dataset.ann_file} but '
                            f'{image_reason}')
        elif label_reason:
            problems.append(f'{info["img_path"]}: its label map {info["seg_map_path"]} '
                            f'{label_reason}')
            unmatched.append(info)
        else:
            complete.append(info)
    suffix = dataset.seg_map_suffix
    hint = None
    if ann_dir and len(unmatched) > 1:
        stems = [osp.relpath(info['img_path'], img_dir)[:-len(dataset.img_suffix)]
                 for info in unmatched]
        hint = seg_map_suffix_hint(stems, ann_dir, suffix)
        if hint:
            example = osp.join(ann_dir, stems[0] + hint)
            problems = [p for p in problems if ' its label map ' not in p]
            problems.insert(0, unmatched_labels_message(len(unmatched), len(data_list), img_dir,
                                                        ann_dir, suffix, hint, example))
    if ann_dir and not dataset.ann_file:  # a split list may name a subset: then not checked
        images = files_under(img_dir, dataset.img_suffix)
        listed = {info['img_path'] for info in data_list}
        for stem in sorted(images):
            path = osp.join(img_dir, stem + dataset.img_suffix)
            reason = path not in listed and not_a_regular_file(path)
            if reason:
                problems.append(f'{path}: {reason}; the sample is missing (with its label '
                                f'map {osp.join(ann_dir, stem + suffix)})')
        if not hint:  # else these are the label maps the hint names
            for stem in sorted(files_under(ann_dir, suffix) - images):
                problems.append(f'{osp.join(ann_dir, stem + suffix)}: label map without its '
                                f'image {osp.join(img_dir, stem + dataset.img_suffix)}')
    return complete, problems


class CheckedSegFiles:
    """Mixin for an mmseg ``BaseSegDataset`` subclass (put it first among the bases) that fails
    early with the path and the problem: a missing data root, split folder or split list, an
    empty split, an image without its label map or a label map without its image (all when the
    dataset is built), and a sample whose files are broken or whose label values exceed the
    classes (when it is loaded, whatever the pipeline; with ``check_labels_at_build`` every
    sample is checked when the dataset is built).

    Args:
        collect_layout_problems: instead of stopping at the first layout problem, list them all
            in ``layout_problems`` and keep the complete pairs (``tools/check_dataset.py``).
        check_labels_at_build: decode every label map when the dataset is built, so a bad
            label stops the run before the first iteration (default: the class's
            ``CHECK_LABELS_AT_BUILD``).
    """
    LAYOUT_HINT = 'expected the ADE20K layout images/<split>, annotations/<split>'
    CHECK_LABELS_AT_BUILD = False

    def __init__(self, *args, collect_layout_problems: bool = False,
                 check_labels_at_build: Optional[bool] = None, **kwargs) -> None:
        check_pipeline_crop_sizes(kwargs.get('pipeline'), 'dataset pipeline')
        self.collect_layout_problems = collect_layout_problems
        self.check_labels_at_build = (self.CHECK_LABELS_AT_BUILD if check_labels_at_build is None
                                      else check_labels_at_build)
        self.layout_problems: list[str] = []
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        complete, problems = checked_split(self, super().load_data_list, self.LAYOUT_HINT)
        if problems and not self.collect_layout_problems:
            raise first_problem(problems)
        self.layout_problems = problems
        num_classes = len(self.metainfo['classes'])
        for info in complete:
            info['num_classes'] = num_classes
        if self.check_labels_at_build:
            complete = self.check_all_labels(complete)
        return complete

    def check_all_labels(self, data_list: list[dict]) -> list[dict]:
        """``data_list`` after checking every sample's files; stops at the first bad one (or,
        collecting, lists every bad one in ``layout_problems`` and leaves it out)."""
        good = []
        for info in data_list:
            try:
                check_sample_files(info, self.ignore_index)
            except SegDataError as error:
                if not self.collect_layout_problems:
                    raise
                self.layout_problems.append(str(error))
            else:
                good.append(info)
        return good

    def prepare_data(self, idx: int):
        if not self.check_labels_at_build:  # else already checked
            check_sample_files(self.get_data_info(idx), self.ignore_index)
        try:
            return super().prepare_data(idx)
        except SegDataError:
            raise
        except Exception as error:  # an undecodable file fails inside mmcv's loaders
            info = self.get_data_info(idx)
            if info.get('seg_map_path'):  # the label file's own check says what is wrong
                try:
                    check_label_file(info['seg_map_path'], info.get('num_classes'),
                                     bool(info.get('reduce_zero_label')))
                except SegDataError as reason:
                    raise reason from error
            raise SegDataError(f'{sample_files(info)}: cannot be loaded '
                               f'({type(error).__name__}: {error})') from error
