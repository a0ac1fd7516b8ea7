"""Export a segmentor to ONNX (and check it in ONNX Runtime).

    python tools/export_onnx.py CONFIG CHECKPOINT --out FILE.onnx [--shape H W] [--points P]
        [--opset N] [--dynamo] [--verify] [--int8 CALIB [--held-out N]]
        [--cfg-options key=value ...]

Image segmentors (UPerNet, Semantic FPN): input ``img [N, 3, H, W]`` float32, 0..255 in the
channel order of ``LoadImageFromFile`` (BGR), any ``H`` and ``W``; the graph normalises as the
config's data preprocessor does. Outputs ``logits [N, C, H, W]`` (mmseg's ``seg_logits`` in
whole-image mode) and ``classes [N, H, W]``. ``--shape`` is the example size used for tracing.

Point part segmentors: inputs ``points [N, P, C]``, ``point_mask [N, P]`` (bool, True = a real
point; a cloud's padding at the end of its row; all True for clouds of one size) and
``categories [N]`` (int64), outputs ``logits [N, P, parts]`` and ``parts [N, P]`` (restricted to
the category; the rows of padding mean nothing). Any ``N`` and ``P``: ``--points`` is the size
used for tracing.

``--dynamo`` writes the graph with ``torch.onnx.export(dynamo=True)`` (the exporter built on
``torch.export``; needs ``onnxscript``) instead of the TorchScript exporter.

``--verify`` runs the file in ONNX Runtime and the model's own ``test_step`` in PyTorch on three
random inputs (images of sizes other than ``--shape``; clouds of the traced size, of another size,
and a padded batch of a larger and a smaller cloud, each compared with the cloud alone), prints the largest relative difference
(largest absolute difference over the largest logit) and the ORT/PyTorch time ratio, and exits 1
when the difference is above 1e-4.

``--int8 CALIB`` (image segmentors) also writes ``<out>_int8.onnx``: ONNX Runtime's static
quantization (QDQ; int8 weights per channel, uint8 activations) calibrated on the first ``CALIB``
images of the config's training split (through its test pipeline). Convolutions and linear layers
run in int8; the attention products, the softmax, the normalisations and the decode head's
classifier stay fp32 (mmbixt/operations/deploy/quantize.py says why). With ``--verify`` it reports
the share of pixels whose int8 label equals the fp32 PyTorch model's on ``--held-out`` images of
the validation split (default 8) and exits 1 below 99.5%.
"""
from __future__ import annotations

import argparse
import os
import sys

import mmbixt  # noqa: F401,I001  (first: registers modules, quiets mmseg's and mmcv's import notices)
from mmengine.config import DictAction

from mmbixt.checkpoint import CheckpointError
from mmbixt.operations.fileio import check_output_path
from mmbixt.operations.cli import run_cli
from mmbixt.operations.deploy.onnx import (DEFAULT_OPSET, TOLERANCE, ExportError,
                                           export_segmentor, load_segmentor, verify_export)
from mmbixt.operations.deploy.quantize import (AGREEMENT_GOAL, FP32_LAYERS, dataset_images,
                                               int8_path, pixel_agreement, quantize_export)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='the model config (configs/bixt/*.py)')
    parser.add_argument('checkpoint', help='a checkpoint of that model (tools/train.py writes one)')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    parser.add_argument('--shape', type=int, nargs=2, default=(512, 512), metavar=('H', 'W'),
                        help='example image size for tracing (the graph takes any size)')
    parser.add_argument('--points', type=int, default=None,
                        help='points per shape to trace and verify a point model with (default: '
                             'the config\'s training num_points or 2048); the graph takes any '
                             'number, with a point mask')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET)
    parser.add_argument('--dynamo', action='store_true',
                        help='export with torch.onnx.export(dynamo=True) (torch.export based; '
                             'needs onnxscript)')
    parser.add_argument('--verify', action='store_true',
                        help='compare with PyTorch in ONNX Runtime; exit 1 above 1e-4')
    parser.add_argument('--int8', type=int, default=None, metavar='CALIB',
                        help='also write <out>_int8.onnx, quantized statically in ONNX Runtime '
                             'and calibrated on CALIB training images of the config')
    parser.add_argument('--held-out', type=int, default=8, metavar='N',
                        help='validation images --verify checks the int8 graph on (default 8)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)
    if args.int8 is not None and args.int8 < 1:
        parser.error(f'--int8 {args.int8}: calibrate on at least one image')
    if args.held_out < 1:
        parser.error(f'--held-out {args.held_out}: check on at least one image')
    if min(args.shape) < 32:
        parser.error(f'--shape {args.shape[0]} {args.shape[1]}: use at least 32 pixels a side')
    return args


def num_points_of(cfg_path: str) -> int:
    """The points per shape the config samples (test, else training), else 2048: test and val
    configs may score every point (num_points=None)."""
    from mmengine.config import Config
    cfg = Config.fromfile(cfg_path)
    for loader in ('test_dataloader', 'train_dataloader'):
        num_points = cfg.get(loader, {}).get('dataset', {}).get('num_points')
        if num_points:
            return int(num_points)
    return 2048


def main(argv=None) -> int:
    args = parse_args(argv)
    check_output_path(args.out, '--out', folder=False, overwrite=args.overwrite,
                      inputs=[args.config, args.checkpoint])
    exporter = 'dynamo' if args.dynamo else 'torchscript'
    try:
        loaded = load_segmentor(args.config, args.checkpoint, args.cfg_options)
        points = args.points or (num_points_of(args.config) if loaded.kind == 'point' else 0)
        path = export_segmentor(loaded, args.out, shape=args.shape, num_points=points,
                                opset=args.opset, exporter=exporter)
    except (ExportError, CheckpointError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    inputs = (f'img [N, 3, H, W] (traced at {args.shape[0]}x{args.shape[1]})'
              if loaded.kind == 'image' else f'points [N, P, {loaded.point_channels}], point_mask '
              f'[N, P], categories [N] (traced at P={points})')
    print(f'wrote {path} ({exporter} exporter, opset {args.opset}): {inputs}')
    quantized = None
    if args.int8 is not None:
        if loaded.kind != 'image':
            print('error: --int8 quantizes image segmentors only', file=sys.stderr)
            return 2
        try:
            calibration = dataset_images(args.config, 'train', args.int8, args.cfg_options)
            quantized = quantize_export(path, int8_path(path), calibration)
        except ExportError as err:
            print(f'error: {err}', file=sys.stderr)
            return 2
        print(f'wrote {quantized} (int8 QDQ, calibrated on {len(calibration)} training images; '
              f'fp32: attention products, softmax, normalisations, {", ".join(FP32_LAYERS)})')
    if not args.verify:
        return 0
    try:
        checks = verify_export(loaded, path, shape=args.shape, num_points=points)
    except ExportError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for check in checks:
        size = 'x'.join(map(str, check.size))
        print(f'  {size:>9}: largest relative difference {check.max_rel_diff:.2e}, '
              f'{check.labels_differ}/{check.labels_total} labels differ, '
              f'ORT {check.ort_ms:.1f} ms, PyTorch {check.torch_ms:.1f} ms')
    worst = max(c.max_rel_diff for c in checks)
    ratio = sum(c.ort_ms for c in checks) / sum(c.torch_ms for c in checks)
    verdict = 'PASS' if worst <= TOLERANCE else 'FAIL'
    print(f'{verdict}: largest relative difference {worst:.2e} (tolerance {TOLERANCE:.0e}); '
          f'ORT/PyTorch time {ratio:.2f}')
    if quantized is None:
        return 0 if verdict == 'PASS' else 1
    try:
        held_out = dataset_images(args.config, 'val', args.held_out, args.cfg_options)
        agreement = pixel_agreement(loaded, quantized, held_out)
    except ExportError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    int8_verdict = 'PASS' if agreement.share >= AGREEMENT_GOAL else 'FAIL'
    print(f'{int8_verdict}: int8 labels agree with the fp32 PyTorch model on '
          f'{agreement.share:.2%} of {agreement.pixels} pixels ({agreement.images} validation '
          f'images; goal {AGREEMENT_GOAL:.1%})')
    return 0 if verdict == int8_verdict == 'PASS' else 1


if __name__ == '__main__':
    sys.exit(run_cli(main))
