"""``ConfigConsistencyHook``: the model predicts as many classes as the dataset has, and a point
model's groups fit in the dataset's clouds."""
from __future__ import annotations

from typing import Iterator, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS
from torch import nn
from torch.utils.data import Dataset

from ...datasets.point_transforms import SamplePoints
from ...models.core.point_tokenizers import GroupedPointTokenizer


def unwrap(model: nn.Module) -> nn.Module:
    """The segmentor inside DDP and test-time-augmentation wrappers (both keep it as ``module``)."""
    while is_model_wrapper(model) or isinstance(getattr(model, 'module', None), nn.Module):
        model = model.module
    return model


def heads_with_classes(model: nn.Module) -> Iterator[tuple[str, int]]:
    """``(setting, num_classes)`` of each head of ``model`` that has ``num_classes``."""
    for name in ('decode_head', 'auxiliary_head'):
        heads = getattr(model, name, None)
        if isinstance(heads, nn.ModuleList):
            named = [(f'model.{name}.{i}', head) for i, head in enumerate(heads)]
        else:
            named = [(f'model.{name}', heads)] if heads is not None else []
        for setting, head in named:
            if isinstance(getattr(head, 'num_classes', None), int):
                yield f'{setting}.num_classes', head.num_classes


def dataset_label_count(dataset) -> Optional[tuple[int, str]]:
    """How many labels a dataset's samples carry, and where that number comes from: the parts of
    a part-segmentation set (``num_parts``), else its ``classes``; None when it says neither."""
    meta = getattr(dataset, 'metainfo', None) or {}
    if 'num_parts' in meta:
        return int(meta['num_parts']), 'parts (metainfo num_parts)'
    if meta.get('classes'):
        return len(meta['classes']), 'classes (metainfo classes)'
    return None


def innermost(dataset):
    """The dataset inside wrappers that keep it as ``dataset``."""
    while isinstance(getattr(dataset, 'dataset', None), Dataset):
        dataset = dataset.dataset
    return dataset


def dataset_name(dataset) -> str:
    return type(innermost(dataset)).__name__


def points_per_cloud(dataset) -> Optional[int]:
    """The points of each cloud a point dataset yields: its pipeline's ``SamplePoints``
    ``num_points``, else the dataset's; None for other datasets."""
    dataset = innermost(dataset)
    count = getattr(dataset, 'num_points', None)
    for transform in getattr(getattr(dataset, 'pipeline', None), 'transforms', None) or []:
        if isinstance(transform, SamplePoints) and transform.num_points:
            count = transform.num_points
    return count


def check_points(model: nn.Module, dataset) -> None:
    """Refuses point groups larger than the dataset's clouds (``num_groups``, ``group_size``)."""
    count = points_per_cloud(dataset)
    if count is None:
        return
    for module in unwrap(model).modules():
        if isinstance(module, GroupedPointTokenizer):
            module.check_enough_points(count)


def check_crop_fits(model: nn.Module, dataset) -> None:
    """Refuses a training crop larger than the size the data preprocessor pads each batch to
    (``model.data_preprocessor.size``): such a crop cannot be padded to it, and batching fails
    with a torch stack error."""
    size = getattr(getattr(unwrap(model), 'data_preprocessor', None), 'size', None)
    if size is None:
        return
    transforms = getattr(getattr(innermost(dataset), 'pipeline', None), 'transforms', None) or []
    for index, transform in enumerate(transforms):
        crop = getattr(transform, 'crop_size', None)
        if isinstance(crop, (tuple, list)) and len(crop) == 2 and \
                any(c > s for c, s in zip(crop, size)):
            raise ValueError(
                f'train dataset pipeline[{index}] ({type(transform).__name__}) crop_size='
                f'{tuple(crop)} is larger than model.data_preprocessor.size={tuple(size)}, the '
                'size every training batch is padded to: make them equal (crop_size is usually '
                'both)')


def check_classes(model: nn.Module, dataset, loader_name: str) -> None:
    """Refuses a head whose ``num_classes`` is not the dataset's number of labels."""
    labels = dataset_label_count(dataset)
    if labels is None:
        return
    count, source = labels
    for setting, num_classes in heads_with_classes(unwrap(model)):
        if num_classes != count:
            raise ValueError(
                f'{setting}={num_classes} but the dataset of {loader_name} '
                f'({dataset_name(dataset)}) has {count} {source}: set {setting}={count} (and '
                'the same in every head), or give the dataset the classes the model predicts')


@HOOKS.register_module()
class ConfigConsistencyHook(Hook):
    """Checks, before the first training, validation or test iteration, that the model's heads
    predict as many classes as the dataset of that loop has (mmseg would train and score a
    mismatched pair without a word), and that a point model's groups fit in its clouds."""
    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        check_classes(runner.model, runner.train_dataloader.dataset, 'train_dataloader')
        check_points(runner.model, runner.train_dataloader.dataset)
        check_crop_fits(runner.model, runner.train_dataloader.dataset)

    def before_val(self, runner) -> None:
        check_classes(runner.model, runner.val_dataloader.dataset, 'val_dataloader')
        check_points(runner.model, runner.val_dataloader.dataset)

    def before_test(self, runner) -> None:
        check_classes(runner.model, runner.test_dataloader.dataset, 'test_dataloader')
        check_points(runner.model, runner.test_dataloader.dataset)
