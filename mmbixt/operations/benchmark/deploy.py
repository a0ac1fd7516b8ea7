"""Section ``deploy``: predictions of a trained model (the `make demo` segmentor) on the fast path
and in int8 ONNX Runtime against fp32 PyTorch, and the int8 UPerNet-BiXT-Ti/16 graph's speed
against mmseg's UPerNet-ViT-Ti/16 in fp32 PyTorch."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import REPO
from .segment import segmentor

DEMO_CONFIG = 'configs/bixt/demo_upernet_bixt_ti.py'
DEMO_WORK_DIR = Path('demo_output') / 'work_dir'   # where tools/demo.py trains (under REPO)
DEMO_DATA = Path('demo_output') / 'data'
CALIBRATION_IMAGES = 32   # training images of the demo data (of 48)
SPEED_CALIBRATION = 4     # random-weight UPerNet: ranges only matter for the time, not labels


def trained_demo_checkpoint() -> Path:
    """The checkpoint `make demo` trained (its ``last_checkpoint``); trains it first (about a
    minute, one thread) when there is none."""
    from mmbixt.datasets import make_synthetic_ade20k
    make_synthetic_ade20k(REPO / DEMO_DATA)
    pointer = REPO / DEMO_WORK_DIR / 'last_checkpoint'
    if not (pointer.is_file() and (REPO / pointer.read_text().strip()).is_file()):
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
        subprocess.run([sys.executable, 'tools/train.py', DEMO_CONFIG, '--work-dir',
                        str(DEMO_WORK_DIR), '--overwrite'], cwd=REPO, env=env, check=True,
                       capture_output=True)
    return REPO / pointer.read_text().strip()


def agreement_case(args: dict) -> dict:
    """Pixel agreement with fp32 PyTorch of the fast path and of the int8 graph, on the trained
    demo model's validation images."""
    import torch
    from mmbixt.models.inference import fast_inference
    from mmbixt.operations.deploy.onnx import export_segmentor, load_segmentor
    from mmbixt.operations.deploy.quantize import (dataset_images, pixel_agreement,
                                                   quantize_export)
    from mmseg.structures import SegDataSample
    checkpoint = trained_demo_checkpoint()
    config = str(REPO / DEMO_CONFIG)
    options = {f'{split}_dataloader.dataset.data_root': str(REPO / DEMO_DATA)
               for split in ('train', 'val', 'test')}
    loaded = load_segmentor(config, checkpoint, options)
    held_out = dataset_images(config, 'val', 10 ** 6, options)
    model, same = loaded.model, 0
    pixels = sum(image[0].numel() for image in held_out)
    for image in held_out:
        size = tuple(image.shape[-2:])
        data = dict(inputs=[image], data_samples=[SegDataSample(
            metainfo=dict(img_shape=size, ori_shape=size))])
        with torch.no_grad():
            expected = model.test_step(data)[0].pred_sem_seg.data
        with fast_inference(model):
            actual = model.test_step(data)[0].pred_sem_seg.data
        same += int((actual == expected).sum())
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_segmentor(loaded, Path(tmp) / 'demo.onnx', shape=(128, 256))
        int8 = quantize_export(fp32, Path(tmp) / 'demo_int8.onnx',
                               dataset_images(config, 'train', CALIBRATION_IMAGES, options))
        int8_agreement = pixel_agreement(loaded, int8, held_out, args['threads'])
    return {'checkpoint': str(checkpoint.relative_to(REPO)), 'images': len(held_out),
            'pixels': pixels, 'fast_path': same / pixels, 'int8': int8_agreement.share}


def int8_speed_case(size: int, args: dict) -> dict:
    """UPerNet-BiXT-Ti/16 (150 classes) as an int8 graph in ONNX Runtime, interleaved with mmseg's
    UPerNet-ViT-Ti/16 in fp32 PyTorch (``test_step``) and, for reference, the fp32 graph and
    UPerNet-BiXT-Ti/16 in fp32 PyTorch; whole image at ``size``."""
    import torch
    import torch.nn.functional as F
    from mmbixt.operations.deploy.onnx import (ImagePreprocessing, ImageSegmentorGraph,
                                               export_graph, image_graph, ort_inference_session,
                                               run_session)
    from mmbixt.operations.deploy.quantize import dataset_images, quantize_export
    from mmbixt.datasets import make_synthetic_ade20k
    from .segment import whole_image_batch
    torch.manual_seed(0)
    bixt = segmentor('upernet', 'bixt', 16, size).eval()
    vit = segmentor('upernet', 'vit', 16, size).eval()
    make_synthetic_ade20k(REPO / DEMO_DATA)
    options = {'train_dataloader.dataset.data_root': str(REPO / DEMO_DATA)}
    # The demo data's images, resized to the measured size (a calibration for timing only).
    calibration = [F.interpolate(image[None].float(), size=(size, size), mode='bilinear')[0]
                   for image in dataset_images(REPO / DEMO_CONFIG, 'train', SPEED_CALIBRATION,
                                               options)]
    from mmengine.config import Config
    model_cfg = Config.fromfile(str(REPO / 'configs/_base_/models/upernet_bixt.py')).model
    preprocessing = ImagePreprocessing.from_config(model_cfg.get('data_preprocessor'),
                                                   'configs/_base_/models/upernet_bixt.py')
    data = whole_image_batch(size)
    img = data['inputs'][0][None].float()
    with tempfile.TemporaryDirectory() as tmp:
        spec = image_graph(ImageSegmentorGraph(bixt, preprocessing), (size, size))
        fp32 = export_graph(spec, Path(tmp) / 'upernet.onnx', source='UPerNet-BiXT-Ti/16')
        int8 = quantize_export(fp32, Path(tmp) / 'upernet_int8.onnx', calibration)
        sessions = {name: ort_inference_session(path, args['threads'])
                    for name, path in (('fp32', fp32), ('int8', int8))}
    functions = {
        'UPerNet-BiXT-Ti/16 int8, ONNX Runtime': lambda: run_session(sessions['int8'], img),
        'UPerNet-BiXT-Ti/16 fp32, ONNX Runtime': lambda: run_session(sessions['fp32'], img),
        'UPerNet-BiXT-Ti/16 fp32, PyTorch': lambda: bixt.test_step(data),
        'UPerNet-ViT-Ti/16 fp32, PyTorch': lambda: vit.test_step(data)}
    times: dict[str, list[float]] = {name: [] for name in functions}
    with torch.no_grad():
        for fn in functions.values():
            fn()
        for _ in range(max(1, args['rounds'])):
            for name, fn in functions.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {'size': size, 'ms': {name: statistics.median(t) for name, t in times.items()}}


def deploy_case(case: str, size: int, args: dict) -> dict:
    return agreement_case(args) if case == 'agreement' else int8_speed_case(size, args)


def deploy_table(results: dict) -> str:
    lines = ['| deployment (issue 30) | measured |', '|---|---:|']
    agreement = results.get('agreement', {})
    if 'fast_path' in agreement:
        where = (f'trained demo model ({agreement["checkpoint"]}), {agreement["images"]} '
                 f'validation images, {agreement["pixels"]} pixels')
        lines += [f'| fast path labels = fp32 PyTorch, {where} | {agreement["fast_path"]:.3%} |',
                  f'| int8 ONNX Runtime labels = fp32 PyTorch, {where} | {agreement["int8"]:.3%} |']
    speed = results.get('int8 speed', {})
    for name, ms in speed.get('ms', {}).items():
        lines.append(f'| {name}, {speed["size"]} px whole image, ms | {ms:.0f} |')
    for case, result in results.items():
        if 'error' in result:
            lines.append(f'| {case} | {result["error"]} |')
    return '\n'.join(lines)
