"""Top-5 ImageNet labels of images with a BiXT classifier checkpoint.

    python tools/classify.py bixt_ti_l64_p16.zip cat.jpg dog.png [--arch bixt_ti_l64_p16]

The checkpoint is read safely (a released zip as downloaded, its .pth.tar, ...); the model is the one
stored in the checkpoint unless --arch names it; the preprocessing is that model's pretrained data
config (resize, center crop 0.875, bicubic, ImageNet mean/std).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch
from timm.data import ImageNetInfo, create_transform

from mmbixt.datasets.image_files import open_rgb_image
from mmbixt.models.classifiers import BiXTClassifier
from mmbixt.operations.cli import add_classifier_args, build_classifier, run_cli


@torch.no_grad()
def classify(model: BiXTClassifier, transform, paths: Sequence[str], device: str,
             topk: int = 5) -> list[list[tuple[int, float]]]:
    """The ``topk`` (class index, probability) pairs of each image."""
    results = []
    for path in paths:
        image = transform(open_rgb_image(path)).unsqueeze(0).to(device)
        probs = model(image).softmax(dim=-1)[0]
        values, indices = probs.topk(min(topk, probs.numel()))
        results.append(list(zip(indices.tolist(), values.tolist())))
    return results


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_classifier_args(parser)
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--topk', type=int, default=5)
    args = parser.parse_args(argv)

    model, data_config = build_classifier(args)
    info = ImageNetInfo()
    transform = create_transform(**data_config)
    for path, top in zip(args.images, classify(model, transform, args.images, args.device, args.topk)):
        print(path)
        for index, prob in top:
            print(f'  {prob * 100:6.2f}%  {index:4d}  {info.index_to_label_name(index)}  '
                  f'{info.index_to_description(index)}')


if __name__ == '__main__':
    sys.exit(run_cli(main))
