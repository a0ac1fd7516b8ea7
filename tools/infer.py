"""Segment images with a trained BiXT model and draw where its latents look.

    python tools/infer.py CONFIG CHECKPOINT IMAGE [IMAGE ...] [--out-dir DIR] [--layers 0 5 11]
        [--device cpu] [--opacity 0.5] [--cfg-options key=value ...]

For each image it writes ``<name>_overlay.png`` (prediction in the class palette over the image)
and, for each chosen layer ``i``, ``<name>_layer<i>_latents.png`` (a grid: each latent's
attention over the image, averaged over heads) and ``<name>_layer<i>_assignment.png`` (the
latent each region attends to most, one colour per latent, over the image).
"""
from __future__ import annotations

import argparse
import math
import os.path as osp
import sys
from pathlib import Path
from typing import Sequence

import mmbixt  # noqa: F401,I001  (first: registers modules, quiets mmseg's and mmcv's import notices)
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmseg.apis import inference_model, init_model
from PIL import Image

from mmbixt.tools_common import run_cli


class AttentionRecorder:
    """Captures the inputs of ``core.blocks[i].cross_attention_latents_token`` through forward
    pre-hooks and the token grid from the tokenizer, then turns them into attention maps with the
    block's own pre-norms and ``BiCrossAttention.attention_maps`` (the core stays untouched).

    The hook sits on the block, not on its ``attn``: the block's fast path calls the attention's
    parts directly, so ``attn`` itself is never called."""

    def __init__(self, backbone: torch.nn.Module, layers: Sequence[int]):
        self.inputs: dict[int, tuple] = {}
        self.grid: tuple[int, int] = (0, 0)
        self.blocks = {i: backbone.core.blocks[i].cross_attention_latents_token for i in layers}
        self.handles = [module.register_forward_pre_hook(self._keep(i))
                        for i, module in self.blocks.items()]
        self.handles.append(backbone.patch_embed.register_forward_hook(self._keep_grid))

    def _keep(self, layer: int):
        def hook(_module, args):
            self.inputs[layer] = tuple(a.detach() for a in args)
        return hook

    def _keep_grid(self, _module, _args, output):
        self.grid = tuple(output.shape[-2:])

    @torch.no_grad()
    def maps(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Head-averaged (latent -> tokens, token -> latents) maps ``[L, h, w]`` of sample 0."""
        block = self.blocks[layer]
        latents, tokens = self.inputs[layer]
        to_tokens, to_latents = block.attn.attention_maps(block.norm1_lat(latents),
                                                          block.norm1_pat(tokens))
        shape = (-1,) + self.grid
        return to_tokens[0].mean(0).reshape(shape), to_latents[0].mean(0).reshape(shape)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def distinct_colours(count: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 256, (count, 3)).astype(np.uint8)


def to_image_size(maps: torch.Tensor, covered: tuple[int, int], size: tuple[int, int]
                  ) -> torch.Tensor:
    """``[C, h, w]`` token maps -> ``[C, H, W]`` over the original image: ``covered`` is how many
    token rows and columns hold the (resized) image; the rest covers padding."""
    maps = maps[:, :covered[0], :covered[1]]
    return F.interpolate(maps[None].float(), size=size, mode='nearest')[0]


def blend(image: np.ndarray, colours: np.ndarray, opacity: float) -> Image.Image:
    return Image.fromarray((image * (1 - opacity) + colours * opacity).astype(np.uint8))


def latent_grid(to_tokens: torch.Tensor, covered: tuple[int, int], image: np.ndarray
                ) -> Image.Image:
    """Tiles each latent's attention (normalised to its maximum) as a heat map over the image."""
    heat = to_image_size(to_tokens, covered, image.shape[:2])
    heat = heat / heat.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    columns = math.ceil(math.sqrt(len(heat)))
    rows = math.ceil(len(heat) / columns)
    height, width = image.shape[:2]
    canvas = np.zeros((rows * (height + 2), columns * (width + 2), 3), np.uint8)
    grey = image.mean(-1, keepdims=True) * 0.5
    for index, tile in enumerate(heat.numpy()):
        row, column = divmod(index, columns)
        hot = np.stack([tile * 255, tile * 160, (1 - tile) * 60], -1)  # dark blue -> orange
        top, left = row * (height + 2), column * (width + 2)
        canvas[top:top + height, left:left + width] = np.clip(grey + hot * 0.8, 0, 255)
    return Image.fromarray(canvas)


def assignment_map(to_latents: torch.Tensor, covered: tuple[int, int], image: np.ndarray,
                   opacity: float) -> Image.Image:
    """Colours each region by the latent it attends to most."""
    winner = to_image_size(to_latents, covered, image.shape[:2]).argmax(0).numpy()
    return blend(image, distinct_colours(len(to_latents))[winner], opacity)


def overlay(model, result, image: np.ndarray, opacity: float) -> Image.Image:
    pred = result.pred_sem_seg.data[0].cpu().numpy()
    palette = np.asarray((model.dataset_meta or {}).get('palette')
                         or distinct_colours(int(pred.max()) + 1),
                         dtype=np.uint8)
    return blend(image, palette[pred % len(palette)], opacity)


def read_image(path: str) -> np.ndarray:
    """The image as RGB ``uint8`` (grayscale and RGBA files become RGB); a file that is not a
    readable image stops the run with its name."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert('RGB'))
    except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise SystemExit(f'error: {path} is not a readable image ({type(err).__name__}: {err})')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Segment images and draw BiXT attention maps')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('images', nargs='+')
    parser.add_argument('--out-dir', default='infer_output')
    parser.add_argument('--layers', type=int, nargs='*', default=None,
                        help='layers whose attention is drawn (default: first, middle, last)')
    parser.add_argument('--device', default='cuda:0' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--opacity', type=float, default=0.5)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    return parser.parse_args(argv)


def main(argv=None) -> list[Path]:
    args = parse_args(argv)
    config = Config.fromfile(args.config)
    config.merge_from_dict(args.cfg_options)
    images = {path: read_image(path) for path in args.images}  # all readable before any work
    model = init_model(config, args.checkpoint, device=args.device)
    num_layers = max(model.backbone.out_indices) + 1  # the layers the backbone runs
    layers = args.layers if args.layers is not None else sorted({0, num_layers // 2,
                                                                  num_layers - 1})
    if any(not 0 <= layer < num_layers for layer in layers):
        raise SystemExit(f'error: --layers {layers}: the backbone runs layers 0..{num_layers - 1}')
    recorder = AttentionRecorder(model.backbone, layers)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, image in images.items():
        result = inference_model(model, np.ascontiguousarray(image[..., ::-1]))  # mmseg wants BGR
        stem = Path(path).stem
        stride = model.backbone.stride
        covered = tuple(math.ceil(side / stride) for side in result.metainfo['img_shape'][:2])
        pictures = {f'{stem}_overlay.png': overlay(model, result, image, args.opacity)}
        for layer in layers:
            to_tokens, to_latents = recorder.maps(layer)
            pictures[f'{stem}_layer{layer}_latents.png'] = latent_grid(to_tokens, covered, image)
            pictures[f'{stem}_layer{layer}_assignment.png'] = assignment_map(
                to_latents, covered, image, args.opacity)
        for name, picture in pictures.items():
            picture.save(out_dir / name)
            written.append(out_dir / name)
        print(f'{path}: {len(pictures)} pictures in {out_dir}')
    recorder.remove()
    return written


if __name__ == '__main__':
    sys.exit(run_cli(main))
