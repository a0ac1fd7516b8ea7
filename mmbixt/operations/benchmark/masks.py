"""The token-mask section (issue 17, ``--masks``): masked vs unmasked with nothing padded, and
batched vs one-by-one test over mixed sizes."""
from __future__ import annotations


from .common import DIMS, tokens_of
from .measure import interleaved
from .peers import bixt_backbone
from .segment import segmentor


# Self-contained: `python tools/benchmark.py --masks [--rounds R] [--threads T]` runs only this.
MASK_SIZES = (512, 1024)
# Four ADE20K-like test images (after the 2048x512 resize), all of different sizes.
MIXED_TEST_SHAPES = ((512, 683), (512, 768), (384, 512), (512, 640))


def mask_cost(size: int, rounds: int) -> dict:
    """BiXT-Ti/16 at ``size`` with nothing padded, interleaved (median ms): the backbone without
    and with ``valid_shapes`` (every pixel real), and its layers without a token mask and with an
    all-valid one (what the masked attention itself costs, as in a batch with padding)."""
    import torch
    torch.manual_seed(0)
    backbone = bixt_backbone(16)
    img = torch.randn(1, 3, size, size)
    tokens = torch.randn(1, tokens_of(size, 16), DIMS)
    all_valid = torch.ones(tokens.shape[:2], dtype=torch.bool)
    core, indices = backbone.core, list(backbone.out_indices)
    ms = interleaved({
        'backbone': lambda: backbone(img),
        'backbone, valid_shapes': lambda: backbone(img, valid_shapes=[(size, size)]),
        'layers': lambda: core.forward_until(tokens, indices),
        'layers, all-valid mask': lambda: core.forward_until(tokens, indices, all_valid)}, rounds)
    return {'size': size, 'ms': ms,
            'valid_shapes_ratio': ms['backbone, valid_shapes'] / ms['backbone'],
            'mask_kernel_ratio': ms['layers, all-valid mask'] / ms['layers']}


def mixed_test_batch(shapes) -> dict:
    """A test batch as the dataloader gives it: uint8 images of ``shapes`` and their samples."""
    import torch
    from mmseg.structures import SegDataSample
    return dict(inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in shapes],
                data_samples=[SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
                              for h, w in shapes])


def batched_test_gain(rounds: int, shapes=MIXED_TEST_SHAPES) -> dict:
    """UPerNet-BiXT-Ti/16 ``test_step`` on images of different sizes: the batch at once against
    one image at a time, interleaved (median ms and the speed-up)."""
    import torch
    torch.manual_seed(0)
    model = segmentor('upernet', 'bixt', 16, max(max(s) for s in shapes)).eval()
    batch = mixed_test_batch(shapes)
    singles = [dict(inputs=[img], data_samples=[sample])
               for img, sample in zip(batch['inputs'], batch['data_samples'])]
    ms = interleaved({f'batch {len(shapes)}': lambda: model.test_step(batch),
                      'batch 1': lambda: [model.test_step(single) for single in singles]}, rounds)
    return {'shapes': [list(s) for s in shapes], **ms,
            'gain': ms['batch 1'] / ms[f'batch {len(shapes)}']}


def masks_report(rounds: int, quick: bool = False) -> list[str]:
    """The lines of the mask section: cost without padding, gain of a batched mixed-size test."""
    lines = []
    for size in (64, 128) if quick else MASK_SIZES:
        cost = mask_cost(size, rounds)
        lines.append(f'masks, nothing padded, {size}x{size} Ti/16: backbone with/without '
                     f'valid_shapes {cost["valid_shapes_ratio"]:.3f}; layers with an all-valid '
                     f'token mask / without {cost["mask_kernel_ratio"]:.3f}')
    shapes = ((64, 96), (80, 64), (48, 64), (64, 64)) if quick else MIXED_TEST_SHAPES
    gain = batched_test_gain(rounds, shapes)
    lines.append(f'batched test, {len(shapes)} mixed sizes {gain["shapes"]}: batch 1 / batch '
                 f'{len(shapes)} time {gain["gain"]:.2f}x')
    return lines
