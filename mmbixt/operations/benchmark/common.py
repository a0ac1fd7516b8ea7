"""The benchmark's settings (models, sizes, limits) and the analytic FLOPs of BiXT-Ti and
ViT-Ti."""
from __future__ import annotations

from pathlib import Path


REPO = Path(__file__).resolve().parents[3]  # the checkout: work_dirs/ and the children's cwd
DIMS, HEADS_VIT, LAYERS, LATENTS, MLP_RATIO = 192, 3, 12, 64, 4
ARCHS = {16: 'bixt_ti_l64_d13_p16', 8: 'bixt_ti_l64_d13_p16s8', 4: 'bixt_ti_l64_d13_p16s4'}
PEAK_SIZE = 2048
SECTIONS = ('forward', 'attention', 'segment', 'train', 'scaling', 'fits', 'profile', 'deploy')
SCALING_SIZES = (256, 384, 512, 768, 1024, 1536, 2048)
VIT_LIMIT_GB = 20     # the scaling plot's ViT points stop where its attention passes this
FIT_BUDGET_GB = 16    # whole-image inference budget of issue 22, goal 5
BACKBONES = {'BiXT-Ti/16': ('bixt', 16), 'BiXT-Ti/8': ('bixt', 8), 'BiXT-Ti/4': ('bixt', 4),
             'ViT-Ti/16': ('vit', 16)}
HEADS = {'upernet': 'UPerNet', 'fpn': 'Semantic FPN'}


def tokens_of(size: int, stride: int) -> int:
    return (size // stride) ** 2


def bixt_gflop(size: int, stride: int) -> float:
    """Forward FLOPs (a multiply-add is 2) of the BiXT-Ti backbone's 12 layers plus tokenizer."""
    n, d, lat = tokens_of(size, stride), DIMS, LATENTS
    embed = 2 * n * (3 * 16 * 16) * d + 2 * n * 64 * d
    token_side = 2 * n * d * (2 * d + d + 2 * MLP_RATIO * d)
    cross = 3 * 2 * lat * n * d
    latent_side = 2 * lat * d * (2 * d + d + 2 * MLP_RATIO * d)
    self_attn = 2 * lat * d * (4 * d + 2 * MLP_RATIO * d) + 2 * 2 * lat * lat * d
    return (embed + LAYERS * (token_side + cross + latent_side + self_attn)) / 1e9


def vit_attention_gb(size: int) -> float:
    """Memory of one layer's attention matrices in ViT-Ti/16 (fp32, 3 heads, softmax input and
    output both alive): what grows quadratically and decides where ViT stops fitting."""
    n = tokens_of(size, 16) + 1
    return 2 * HEADS_VIT * n * n * 4 / 2 ** 30
