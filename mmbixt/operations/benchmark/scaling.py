"""Sections ``scaling`` (backbone time and memory over input sizes) and ``fits`` (whole-image
inference against the memory budget)."""
from __future__ import annotations

from typing import Callable

from .common import BACKBONES, VIT_LIMIT_GB, vit_attention_gb
from .measure import interleaved_with_peaks, measure
from .original import load_original, original_and_ours
from .peers import bixt_backbone, vit_backbone
from .segment import segmentor, whole_image_batch


def scaling_group(size: int, peers: list[str], args: dict) -> dict:
    """Every peer's backbone forward at one size, fp32, interleaved: time (median) and peak memory
    (each call's own: the peak is reset and freed memory returned before it)."""
    import torch
    original = load_original(args['original']) if 'original BiXT-Ti/16' in peers else None
    img = torch.randn(1, 3, size, size)
    functions, skipped = {}, {}
    for peer in peers:
        if peer == 'mmseg ViT-Ti/16' and vit_attention_gb(size) > VIT_LIMIT_GB:
            skipped[peer] = f'attention alone {vit_attention_gb(size):.0f} GB > {VIT_LIMIT_GB} GB'
            continue
        functions[peer] = lambda fn=scaling_model(peer, size, original): fn(img)
    return {'size': size, 'runs': interleaved_with_peaks(functions, args['scaling_rounds']),
            'skipped': skipped}


def scaling_points(groups: list[dict]) -> list[dict]:
    """The per-size groups as one ``{'peer', 'points': {size: run}}`` per peer."""
    peers: dict[str, dict] = {}
    for group in groups:
        for peer, run in group.get('runs', {}).items():
            peers.setdefault(peer, {})[str(group['size'])] = run
        for peer, reason in group.get('skipped', {}).items():
            peers.setdefault(peer, {})[str(group['size'])] = {'skipped': reason}
        if 'error' in group:
            peers.setdefault('error', {})[str(group.get('size'))] = {'error': group['error']}
    return [{'peer': peer, 'points': points} for peer, points in peers.items()]


def scaling_model(peer: str, size: int, original) -> Callable:
    if peer == 'mmseg ViT-Ti/16':
        return vit_backbone(size)
    if peer == 'original BiXT-Ti/16':
        return original_and_ours(original, 16, size)[0]
    return bixt_backbone(int(peer.rsplit('/', 1)[1]))


def fit_case(case: str, args: dict) -> dict:
    """One whole-image UPerNet inference (``backbone label:size``), fp32, timed once."""
    import torch
    label, size = case.split(':')
    kind, stride = BACKBONES[label]
    model = segmentor('upernet', kind, stride, int(size)).eval()
    data = whole_image_batch(int(size))
    with torch.no_grad():
        ms, peak = measure(lambda: model.test_step(data))
    return {'ms': ms, 'peak_mb': peak}
