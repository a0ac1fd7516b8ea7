"""``CheckedSegFiles``: the early, file-naming checks every mmbixt segmentation dataset shares
(``BiXTADE20KDataset``, ``BiXTSegDataset``, your own ``BaseSegDataset`` subclass)."""
from __future__ import annotations

import os
import os.path as osp
from typing import Optional

from ..sizes import check_pipeline_crop_sizes
from .image_files import not_a_regular_file
from .sample_checks import check_sample_files, empty_split_message
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
        if self.data_root and not osp.isdir(self.data_root):
            raise SegDataError(f'data root {self.data_root} does not exist ({self.LAYOUT_HINT})')
        img_dir = self.data_prefix.get('img_path', '')
        ann_dir = self.data_prefix.get('seg_map_path')
        for folder in (img_dir, ann_dir):
            if folder and not osp.isdir(folder):
                raise SegDataError(f'split folder {folder} does not exist')
        if self.ann_file and not osp.isdir(self.ann_file) and not osp.isfile(self.ann_file):
            raise SegDataError(f'split list {self.ann_file} does not exist')
        data_list = super().load_data_list()
        if not data_list:
            raise SegDataError(f'split list {self.ann_file} names no images' if self.ann_file
                               else empty_split_message(img_dir, self.img_suffix))
        complete, problems = self.check_layout(data_list, img_dir, ann_dir)
        unlabelled = unlabelled_split_problem(
            ann_dir or self.ann_file, [info['seg_map_path'] for info in complete
                                       if info.get('seg_map_path')],
            bool(self.reduce_zero_label), self.ignore_index)
        problems += [unlabelled] if unlabelled else []
        if problems and not self.collect_layout_problems:
            more = len(problems) - 1
            raise SegDataError(problems[0] + (f' (and {more} more problems: tools/check_dataset.py '
                                              'lists them all)' if more else ''))
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

    def check_layout(self, data_list: list[dict], img_dir: str, ann_dir: Optional[str]
                     ) -> tuple[list[dict], list[str]]:
        """The samples whose image and label map are both readable files, and a line per
        missing one: absent, a FIFO, a dangling symbolic link (mmseg's folder listing passes
        over the last two in silence, and their label maps with them)."""
        problems, complete = [], []
        for info in data_list:
            image_reason = not_a_regular_file(info['img_path'])  # only with a split list
            label_reason = info.get('seg_map_path') and not_a_regular_file(info['seg_map_path'])
            if image_reason:
                problems.append(f'{info["img_path"]}: listed in {self.ann_file} but '
                                f'{image_reason}')
            elif label_reason:
                problems.append(f'{info["img_path"]}: its label map {info["seg_map_path"]} '
                                f'{label_reason}')
            else:
                complete.append(info)
        if ann_dir and not self.ann_file:  # a split list may name a subset: then not checked
            images = files_under(img_dir, self.img_suffix)
            listed = {info['img_path'] for info in data_list}
            for stem in sorted(images):
                path = osp.join(img_dir, stem + self.img_suffix)
                reason = path not in listed and not_a_regular_file(path)
                if reason:
                    problems.append(f'{path}: {reason}; the sample is missing (with its label '
                                    f'map {osp.join(ann_dir, stem + self.seg_map_suffix)})')
            for stem in sorted(files_under(ann_dir, self.seg_map_suffix) - images):
                problems.append(f'{osp.join(ann_dir, stem + self.seg_map_suffix)}: label map '
                                f'without its image {osp.join(img_dir, stem + self.img_suffix)}')
        return complete, problems

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
