"""Top-5 ImageNet labels of images with a BiXT classifier checkpoint.

    python tools/classify.py bixt_ti_l64_p16.zip cat.jpg dog.png [--arch bixt_ti_l64_p16]

The checkpoint is read safely (a released zip as downloaded, its .pth.tar, ...); the model is the one
stored in the checkpoint unless --arch names it; the preprocessing is that model's pretrained data
config (resize, center crop 0.875, bicubic, ImageNet mean/std).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image
from timm.data import ImageNetInfo, create_transform, resolve_data_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mmbixt.models.classifiers import BiXTClassifier, create_classifier  # noqa: E402


def parse_arch(text: Optional[str]):
    """A released name, or a JSON dict of ``mmbixt.archs.ARCH_DICT_KEYS`` for other sizes."""
    return json.loads(text) if text and text.lstrip().startswith('{') else text


def build_model(args: argparse.Namespace) -> tuple[BiXTClassifier, dict]:
    """The classifier with its weights, on ``args.device``, and its data config."""
    model = create_classifier(args.checkpoint, parse_arch(args.arch), use_ema=args.use_ema)
    overrides = {'input_size': (3, args.img_size, args.img_size)} if args.img_size else {}
    data_config = resolve_data_config(overrides, model=model)
    return model.to(args.device), data_config


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('checkpoint', help='BiXT checkpoint: a released zip as downloaded, or a .pth.tar')
    parser.add_argument('--arch', help='model name (default: the one stored in the checkpoint), or '
                        'a JSON dict of embed_dims, num_heads, num_latents, num_layers, tokenizer, '
                        'patch_size, stride, layer_scale')
    parser.add_argument('--img-size', type=int, help='evaluate at this size instead of the '
                        "model's own (224 or 384)")
    parser.add_argument('--use-ema', action='store_true', help='load the EMA weights')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')


@torch.no_grad()
def classify(model: BiXTClassifier, transform, paths: Sequence[str], device: str,
             topk: int = 5) -> list[list[tuple[int, float]]]:
    """The ``topk`` (class index, probability) pairs of each image."""
    results = []
    for path in paths:
        image = transform(Image.open(path).convert('RGB')).unsqueeze(0).to(device)
        probs = model(image).softmax(dim=-1)[0]
        values, indices = probs.topk(min(topk, probs.numel()))
        results.append(list(zip(indices.tolist(), values.tolist())))
    return results


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_model_args(parser)
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--topk', type=int, default=5)
    args = parser.parse_args(argv)

    model, data_config = build_model(args)
    info = ImageNetInfo()
    transform = create_transform(**data_config)
    for path, top in zip(args.images, classify(model, transform, args.images, args.device, args.topk)):
        print(path)
        for index, prob in top:
            print(f'  {prob * 100:6.2f}%  {index:4d}  {info.index_to_label_name(index)}  '
                  f'{info.index_to_description(index)}')


if __name__ == '__main__':
    main()
