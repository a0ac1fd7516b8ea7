"""The data checks a training runs on whatever dataset class and pipeline its config uses
(mmseg's ``BaseSegDataset``, ``ADE20KDataset``, any subclass, ours), before the first iteration.

- :func:`build_checked_dataset` (the runner's dataloaders): the split itself. A segmentation
  dataset is built with ``lazy_init``, its folders and file list are checked
  (:func:`~mmbixt.datasets.ade20k.checked_split`: a missing folder names ``data_prefix``, an empty
  split the suffix and the files found, label maps under another suffix the ``seg_map_suffix``)
  and only then is it initialised: mmseg alone would end in ``need at least one array to
  concatenate``.
- :class:`SegDataCheckHook` before training: every sample's files (up to ``max_samples``, spread
  over the split) are checked as ``tools/check_dataset.py`` does (label values within the classes
  after ``reduce_zero_label``, sizes, decodable lossless label maps, image size limit), and a short
  report of the class shares with the warnings of :mod:`.label_stats` is logged. Before every
  training, validation and test iteration, the labels of the batch are compared with the model's
  classes where they meet it, naming the sample's label file (instead of ``Target 9 is out of
  bounds`` deep in the loss).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
from mmengine.dataset import BaseDataset
from mmengine.hooks import Hook
from mmseg.datasets import BaseSegDataset
from mmseg.registry import HOOKS
from torch.utils.data import Dataset

from ...datasets.checked_files import CheckedSegFiles, checked_split, first_problem
from ...datasets.sample_checks import check_sample_files
from ...datasets.seg_files import SegDataError, out_of_range_error
from ..engine.consistency import heads_with_classes, unwrap
from .label_stats import SplitLabels, label_report, spread_indices, split_name


def build_checked_dataset(dataset_cfg: dict, registry) -> Any:
    """The dataset ``dataset_cfg`` describes, built by ``registry``; a segmentation dataset (also
    inside mmengine's dataset wrappers) has its split checked before it is initialised."""
    dataset_cfg = dict(dataset_cfg)
    for key in ('dataset', 'datasets'):  # RepeatDataset, ClassBalancedDataset, ConcatDataset
        inner = dataset_cfg.get(key)
        if isinstance(inner, dict):
            dataset_cfg[key] = build_checked_dataset(inner, registry)
        elif isinstance(inner, (list, tuple)):
            dataset_cfg[key] = [build_checked_dataset(item, registry) if isinstance(item, dict)
                                else item for item in inner]
    with registry.switch_scope_and_registry(None) as scoped:  # the default scope's (mmseg's)
        dataset_class = scoped.get(dataset_cfg.get('type', ''))
    if (not isinstance(dataset_class, type) or not issubclass(dataset_class, BaseSegDataset)
            or issubclass(dataset_class, CheckedSegFiles)  # checks itself when built
            or dataset_cfg.get('lazy_init')):
        return registry.build(dataset_cfg)
    dataset = registry.build({**dataset_cfg, 'lazy_init': True})
    _, problems = checked_split(dataset, dataset.load_data_list)
    if problems:
        raise first_problem(problems)
    dataset.full_init()
    return dataset


def leaf_datasets(dataset: Dataset) -> Iterator[Dataset]:
    """The datasets inside mmengine's and torch's dataset wrappers."""
    inner = getattr(dataset, 'datasets', None)
    if isinstance(inner, (list, tuple)):
        for item in inner:
            yield from leaf_datasets(item)
    elif isinstance(getattr(dataset, 'dataset', None), Dataset):
        yield from leaf_datasets(dataset.dataset)
    else:
        yield dataset


def check_and_count(dataset: BaseSegDataset, name: str, max_samples: Optional[int]
                    ) -> SplitLabels:
    """Checks the files of every sample of ``dataset`` (up to ``max_samples``, spread evenly) and
    counts their label values; the first bad sample is refused naming its file."""
    classes = dataset.metainfo['classes']
    stats = SplitLabels(split_name(dataset, name), classes, bool(dataset.reduce_zero_label),
                        dataset.ignore_index, total=len(dataset))
    for index in spread_indices(len(dataset), max_samples):
        info = dict(dataset.get_data_info(index))
        info.setdefault('num_classes', len(classes))
        values = check_sample_files(info, dataset.ignore_index)
        if values is not None and not info.get('label_map'):
            stats.add(values)
    return stats


def check_batch_labels(model: torch.nn.Module, data_batch: Any) -> None:
    """Refuses label values of a segmentation batch beyond the classes of the model's heads,
    naming the sample's label file and the values as the file stores them."""
    samples = data_batch.get('data_samples') if isinstance(data_batch, dict) else None
    heads = dict(heads_with_classes(unwrap(model)))
    if not samples or not heads:
        return
    num_classes = min(heads.values())
    ignore_index = getattr(getattr(unwrap(model), 'decode_head', None), 'ignore_index', 255)
    for sample in samples:
        label = getattr(sample, 'gt_sem_seg', None)
        if label is None:
            continue
        values = torch.unique(label.data)
        bad = values[(values >= num_classes) & (values != ignore_index)]
        if bad.numel():
            reduce_zero_label = bool(sample.metainfo.get('reduce_zero_label'))
            where = sample.metainfo.get('seg_map_path') or sample.metainfo.get('img_path')
            stored = bad.cpu().numpy() + (1 if reduce_zero_label else 0)
            raise out_of_range_error(f'{where} (label map of a batch)', stored, num_classes,
                                     reduce_zero_label, ignore_index)


@HOOKS.register_module()
class SegDataCheckHook(Hook):
    """Checks the samples of any segmentation dataset before training (``max_samples`` per split,
    spread evenly; None: all) and logs the class shares and their warnings; checks each batch's
    labels against the model's classes before every iteration (see the module doc)."""
    priority = 'VERY_HIGH'

    def __init__(self, max_samples: Optional[int] = 2000) -> None:
        self.max_samples = max_samples

    def before_train(self, runner) -> None:
        loaders = [('train', runner.train_dataloader)]
        if runner.val_loop is not None:
            loaders.append(('val', runner.val_loop.dataloader))
        for name, loader in loaders:
            for dataset in leaf_datasets(loader.dataset):
                if not isinstance(dataset, BaseSegDataset) or not isinstance(dataset, BaseDataset):
                    continue
                line, warnings = label_report(check_and_count(dataset, name, self.max_samples))
                runner.logger.info(f'labels of {line}')
                for warning in warnings:
                    runner.logger.warning(warning)

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        check_batch_labels(runner.model, data_batch)

    def before_val_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        check_batch_labels(runner.model, data_batch)

    def before_test_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        check_batch_labels(runner.model, data_batch)


__all__ = ['SegDataCheckHook', 'SegDataError', 'build_checked_dataset', 'check_batch_labels']
