"""Segment images with a trained BiXT model and draw one figure per image.

    python tools/infer.py CONFIG CHECKPOINT IMAGE [IMAGE ...] [--out-dir DIR] [--gt LABEL ...]
        [--layers 0 5 11] [--latents 4] [--amp] [--device cpu] [--opacity 0.5]
        [--cfg-options key=value ...]

Each figure (``<name>_bixt.png``, at least 1200 px wide) shows the input, the prediction over it,
the ground truth when ``--gt`` gives it (one label map per image, or a folder of
``<image name><seg_map_suffix>``, the config's suffix), a legend of the classes present, and for each chosen layer which latent each
region reads most, the latents' mean attention and the most distinct latents. Inputs in different
folders keep their folders under ``--out-dir``, so equal names never overwrite each other.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import sys
from pathlib import Path

import mmbixt  # noqa: F401,I001  (first: registers modules, quiets mmseg's and mmcv's import notices)
import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmseg.apis import inference_model, init_model
from mmseg.registry import DATASETS

from mmbixt.checkpoint import CheckpointError
from mmbixt.checkpoint.model_match import load_model_checkpoint
from mmbixt.models.precision import autocast_dtype
from mmbixt.operations.engine.config_file import read_config
from mmbixt.operations.fileio import check_output_dir, check_output_path
from mmbixt.operations.cli import dataset_folders, run_cli
from mmbixt.operations.visualization import (
    AttentionRecorder, InputFileError, check_regular_file, figure_paths, label_paths, read_image,
    read_label_map, segmentation_figure)
from mmbixt.operations.visualization.colours import distinct_colours
from mmbixt.operations.visualization.files import check_same_size


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'{value} is negative')
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Segment images and draw BiXT attention maps')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('images', nargs='+')
    parser.add_argument('--out-dir', default='infer_output')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace figures an earlier run wrote under --out-dir')
    parser.add_argument('--gt', nargs='+', default=None, metavar='LABEL',
                        help='ground truth: one label map per image (same order), or a folder '
                             'holding <image name><seg_map_suffix> for each image (the config\'s '
                             'test dataset suffix, .png by default)')
    parser.add_argument('--layers', type=int, nargs='*', default=None,
                        help='layers whose attention is drawn (default: first, middle, last)')
    parser.add_argument('--latents', type=non_negative, default=4,
                        help='how many of the most distinct latents each layer shows')
    parser.add_argument('--amp', action='store_true',
                        help='run the model under autocast (float16 on CUDA, bfloat16 on a CPU '
                        'with native bf16; fp32, said so, on a CPU without)')
    parser.add_argument('--device', default='cuda:0' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--opacity', type=float, default=0.5)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    return parser.parse_args(argv)


def dataset_settings(config: Config) -> tuple[dict, type | None]:
    """The test dataset's settings and its registered class (None when unknown)."""
    dataset = (config.get('test_dataloader') or {}).get('dataset') or {}
    return dataset, DATASETS.get(dataset.get('type', ''))


def zero_label_is_unlabelled(config: Config) -> bool:
    """Whether label files store "unlabelled" as 0 and class c as c + 1 (``reduce_zero_label``,
    ADE20K): from the test pipeline's ``LoadAnnotations``, else the test dataset's setting or its
    class's default."""
    dataset, dataset_class = dataset_settings(config)
    for step in dataset.get('pipeline') or []:
        if step.get('type') == 'LoadAnnotations' and step.get('reduce_zero_label') is not None:
            return bool(step['reduce_zero_label'])
    if dataset.get('reduce_zero_label') is not None:
        return bool(dataset['reduce_zero_label'])
    # The class's default, from the first constructor in its MRO that names it (subclasses often
    # pass it on through **kwargs).
    for klass in getattr(dataset_class, '__mro__', ()):
        parameter = inspect.signature(klass.__init__).parameters.get('reduce_zero_label')
        if parameter is not None:
            return parameter.default is True
    return False


def class_meta(model, config: Config) -> tuple[list[str], list]:
    """Class names and palette for the model's classes: from the checkpoint's ``dataset_meta``
    when it stores them for as many classes, else from the config's test dataset, else numbered
    classes in distinct colours."""
    num_classes = model.decode_head.num_classes
    dataset, dataset_class = dataset_settings(config)
    from_config = dict(getattr(dataset_class, 'METAINFO', {}), **(dataset.get('metainfo') or {}))
    for meta in (model.dataset_meta or {}, from_config):
        classes = meta.get('classes')
        if classes and len(classes) == num_classes:
            palette = meta.get('palette')
            return list(classes), palette if palette else distinct_colours(num_classes).tolist()
    return [f'class {c}' for c in range(num_classes)], distinct_colours(num_classes).tolist()


def read_inputs(args, config: Config) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """Every image (and label map) read and checked before the model loads; a path given twice
    is drawn once."""
    suffix = dataset_settings(config)[0].get('seg_map_suffix') or '.png'  # the config's names
    labels = label_paths(args.images, args.gt, suffix) if args.gt else [None] * len(args.images)
    num_classes = config.model.decode_head.num_classes
    reduce_zero = zero_label_is_unlabelled(config)
    inputs, seen = [], set()
    for path, label_path in zip(args.images, labels):
        image = read_image(path)
        if Path(path).resolve() in seen:
            continue
        seen.add(Path(path).resolve())
        truth = None
        if label_path is not None:
            truth = read_label_map(label_path, num_classes, reduce_zero)
            check_same_size(path, image, label_path, truth)
        inputs.append((path, image, truth))
    return inputs


def autocast(device: str, enabled: bool):
    """bfloat16 autocast on a CPU with native bf16, float16 elsewhere; nothing when off or on a
    CPU without native bf16 (fp32, said once with the cost bf16 would have there)."""
    kind = torch.device(device).type
    dtype = autocast_dtype(kind, '--amp') if enabled else None
    return contextlib.nullcontext() if dtype is None else torch.autocast(kind, dtype=dtype)


def load_model(config: Config, checkpoint: str, device: str):
    """The segmentor of ``config`` with the weights of ``checkpoint``, in eval mode on ``device``.
    The file must match the model (``load_model_checkpoint``; ``--cfg-options load_strict=False``
    loads what matches and logs the rest); class names come from its ``meta`` when stored."""
    model = init_model(config, None, device='cpu')
    loaded = load_model_checkpoint(model, checkpoint, strict=config.get('load_strict', True))
    model.dataset_meta = (loaded.get('meta') or {}).get('dataset_meta')
    return model.to(device).eval()


def run(args: argparse.Namespace) -> list[Path]:
    config = read_config(args.config)
    config.merge_from_dict(args.cfg_options)
    check_output_dir(args.out_dir, '--out-dir')
    inputs = read_inputs(args, config)
    outputs = figure_paths([path for path, _, _ in inputs], Path(args.out_dir))
    for output in outputs.values():
        check_output_path(str(output), '--out-dir', folder=False, overwrite=args.overwrite,
                          inputs=[args.config, args.checkpoint],
                          data_folders=dataset_folders(config))
    if '://' not in args.checkpoint:  # remote checkpoints are mmengine's to fetch
        check_regular_file(args.checkpoint, 'checkpoint')
    model = load_model(config, args.checkpoint, args.device)
    num_layers = max(model.backbone.out_indices) + 1  # the layers the backbone runs
    layers = args.layers if args.layers is not None else sorted({0, num_layers // 2,
                                                                  num_layers - 1})
    if any(not 0 <= layer < num_layers for layer in layers):
        raise SystemExit(f'error: --layers {layers}: the backbone runs layers 0..{num_layers - 1}')
    class_names, palette = class_meta(model, config)
    recorder = AttentionRecorder(model.backbone, layers)
    written = []
    for path, image, truth in inputs:
        with autocast(args.device, args.amp):
            result = inference_model(model, np.ascontiguousarray(image[..., ::-1]))  # BGR
        covered = tuple(math.ceil(side / model.backbone.stride)
                        for side in result.metainfo['img_shape'][:2])
        attention = {layer: recorder.over_image(layer, covered) for layer in layers}
        figure = segmentation_figure(
            image, result.pred_sem_seg.data[0].cpu().numpy(), class_names, palette, truth,
            attention, title=path, opacity=args.opacity, num_latents=args.latents,
            num_layers=num_layers)
        outputs[path].parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(outputs[path])
        written.append(outputs[path])
        print(f'{path} -> {outputs[path]}', flush=True)
    recorder.remove()
    return written


def main(argv=None) -> list[Path]:
    """Writes one figure per distinct image; returns their paths."""
    args = parse_args(argv)
    try:
        return run(args)
    except (InputFileError, CheckpointError) as err:
        raise SystemExit(f'error: {err}') from None


if __name__ == '__main__':
    sys.exit(run_cli(main))
