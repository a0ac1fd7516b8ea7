"""ImageNet Acc@1 / Acc@5 of a BiXT classifier checkpoint on an ImageFolder-layout validation set.

    python tools/eval_imagenet.py bixt_ti_l64_p16.zip --data /datasets/imagenet/val

VAL_DIR holds one folder per class, named by its WordNet synset (``n01440764/``, ...); classes map to
the 1000 ImageNet indices in sorted-synset order. A set with only some of the classes works: the
model still chooses among all 1000. For a released checkpoint the published numbers are printed
beside the measured ones.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch
from timm.data import ImageNetInfo, create_transform
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import ImageFolder
from tqdm import tqdm

from mmbixt.archs import PUBLISHED_ACCURACY
from mmbixt.datasets.image_files import open_rgb_image
from mmbixt.operations.cli import add_classifier_args, build_classifier, run_cli


def imagenet_folder(root: str, transform) -> ImageFolder:
    """The ImageFolder at ``root`` with targets mapped to ImageNet-1k indices."""
    # The tools' shared reader: 16-bit files scaled, a truncated or bad file named.
    dataset = ImageFolder(root, transform=transform, loader=open_rgb_image)
    index_of = {synset: i for i, synset in enumerate(ImageNetInfo().label_names())}
    unknown = [name for name in dataset.classes if name not in index_of]
    if unknown:
        raise SystemExit(f'{root}: {len(unknown)} class folders are not ImageNet-1k synsets '
                         f'({", ".join(unknown[:5])}); the folders must be named like n01440764')
    # A list's __getitem__ pickles, so it travels to the loader workers.
    dataset.target_transform = [index_of[name] for name in dataset.classes].__getitem__
    return dataset


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value}: give at least 1 image (leave --limit out to '
                                         'evaluate them all)')
    return value


def evenly_spaced(dataset, limit: Optional[int]):
    """At most ``limit`` samples, spread over the (class-sorted) set so that every class can appear."""
    if limit is None or limit >= len(dataset):
        return dataset
    return Subset(dataset, torch.linspace(0, len(dataset) - 1, limit).round().long().tolist())


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: str) -> tuple[float, float, int]:
    """Acc@1 and Acc@5 in percent, and the number of images."""
    top1 = top5 = seen = 0
    progress = tqdm(loader, desc='eval', unit='batch', dynamic_ncols=True)
    for images, targets in progress:
        logits = model(images.to(device))
        ranked = logits.topk(min(5, logits.shape[-1]), dim=-1).indices.cpu()
        hits = ranked == targets[:, None]
        top1 += hits[:, 0].sum().item()
        top5 += hits.any(dim=1).sum().item()
        seen += len(targets)
        progress.set_postfix(acc1=f'{100 * top1 / seen:.2f}', acc5=f'{100 * top5 / seen:.2f}')
    return 100 * top1 / max(seen, 1), 100 * top5 / max(seen, 1), seen


def main(argv: Optional[Sequence[str]] = None) -> tuple[float, float]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_classifier_args(parser)
    parser.add_argument('--data', required=True, help='validation folder, one sub-folder per synset')
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--workers', type=int, default=4)
    parser.add_argument('--limit', type=positive, help='evaluate at most this many images')
    args = parser.parse_args(argv)

    model, data_config = build_classifier(args)
    if model.num_classes != 1000:
        raise SystemExit(f'{args.checkpoint}: the model has {model.num_classes} classes, not the '
                         '1000 of ImageNet-1k')
    full = imagenet_folder(args.data, create_transform(**data_config))
    dataset = evenly_spaced(full, args.limit)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                        pin_memory=args.device.startswith('cuda'))
    name = model.arch_name or 'BiXT'
    print(f'{name}: {len(dataset)} images of {len(full.classes)} classes from {args.data}, '
          f'input {data_config["input_size"][-1]}px')
    acc1, acc5, _ = evaluate(model, loader, args.device)
    print(f'Acc@1 {acc1:.3f}  Acc@5 {acc5:.3f}')
    if name in PUBLISHED_ACCURACY:
        pub1, pub5 = PUBLISHED_ACCURACY[name]
        partial = len(dataset) < 50000 or len(full.classes) < 1000
        print(f'published (ImageNet-1k val, 50000 images): Acc@1 {pub1:.2f}  Acc@5 {pub5:.2f}'
              + ('  [this run used a subset: not comparable]' if partial else ''))
    return acc1, acc5


if __name__ == '__main__':
    sys.exit(run_cli(main))
