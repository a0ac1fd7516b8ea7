"""What one simulated machine computes, for tests/test_machines.py (run in a subprocess, so the
capability caps of its environment are set before torch is imported):

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python tests/machine_probe.py OUT.pt [--kernel]

Writes ``{'capability': {...}, 'outputs': {name: tensor}, 'paths': {name: bool}}``: a small
UPerNet-BiXT segmentor's logits through each CPU path this machine offers (plain fp32, the fused
oneDNN linears, with ``--kernel`` the attention kernel (compiled for this capability on first
use: a minute of compiling on a small CPU, so the fast suite takes it as the machine is only),
``fast_inference`` with channels-last convolutions, bf16
autocast where native) and the fused linears against their plain ops. Any error fails the run.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'tests')]


def small_segmentor() -> nn.Module:
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    import mmbixt  # noqa: F401  (registers BiXT modules)
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(str(REPO / 'configs/_base_/models/upernet_bixt.py')).model.to_dict()
    norm = dict(type='BN', requires_grad=True)
    cfg['backbone'].update(arch=dict(embed_dims=64, num_heads=2, num_latents=16, num_layers=2,
                                     tokenizer='linear', patch_size=16, stride=8,
                                     layer_scale=True), out_indices=(0, 1, 1, 1))
    cfg['neck'].update(in_channels=64, in_stride=8, norm_cfg=norm)
    cfg['decode_head'].update(in_channels=[64] * 4, channels=32, num_classes=8, norm_cfg=norm)
    cfg['auxiliary_head'].update(in_channels=64, channels=16, num_classes=8, norm_cfg=norm)
    torch.manual_seed(0)
    return MODELS.build(cfg).eval()


def fused_linears() -> dict[str, torch.Tensor]:
    from mmbixt.models.core.fast_ops import linear, linear_gelu, linear_residual
    from mmbixt.models.core.layers import LayerScale
    generator = torch.Generator().manual_seed(0)
    layer, scale = nn.Linear(32, 48), LayerScale(48, 0.5)
    x = torch.randn(2, 9, 32, generator=generator)
    residual = torch.randn(2, 9, 48, generator=generator)
    with torch.no_grad():
        return {'linear': linear(x, layer), 'linear+gelu': linear_gelu(x, layer),
                'linear+residual': linear_residual(x, layer, residual, scale),
                'plain linear+residual': residual + scale(layer(x))}


def probe(kernel: bool) -> dict:
    from mmbixt.compat import cpu_capability, onednn_linear
    from mmbixt.models.core import bidir_attention
    from mmbixt.models.core.fast_ops import FUSED_BY_DEFAULT
    from mmbixt.models.inference import fast_inference, fast_inference_dtype
    capability = cpu_capability()
    model = small_segmentor()
    images = torch.randn(2, 3, 72, 96, generator=torch.Generator().manual_seed(0))
    outputs = dict(fused_linears())
    with torch.no_grad():
        model.backbone.set_execution(fused=False)
        outputs['plain fp32'] = model(images, mode='tensor')
        model.backbone.set_execution(fused=FUSED_BY_DEFAULT)  # this machine's default
        outputs['fused fp32'] = model(images, mode='tensor')
        if kernel:
            model.backbone.set_execution(attention_kernel='fused')
            outputs['attention kernel fp32'] = model(images, mode='tensor')
            model.backbone.set_execution(attention_kernel='portable')
        if capability.bf16:
            with torch.autocast('cpu', dtype=torch.bfloat16):
                outputs['bf16 autocast'] = model(images, mode='tensor').float()
    with fast_inference(model):
        outputs['fast path'] = model(images, mode='tensor').float()
    kernel = (kernel and FUSED_BY_DEFAULT
              and bidir_attention.checked_kernel(torch.float32) is not None)
    paths = {'fused linear fp32': FUSED_BY_DEFAULT and onednn_linear() is not None,
             'fused linear bf16': (FUSED_BY_DEFAULT
                                   and onednn_linear(torch.bfloat16) is not None),
             'attention kernel': kernel,
             'channels-last': any(m.weight.is_contiguous(memory_format=torch.channels_last)
                                  and not m.weight.is_contiguous()
                                  for m in model.modules() if isinstance(m, nn.Conv2d)),
             'fast path bf16': fast_inference_dtype() == torch.bfloat16}
    return {'capability': dataclasses.asdict(capability), 'label': capability.label(),
            'outputs': outputs, 'paths': paths}


if __name__ == '__main__':
    torch.set_num_threads(1)
    torch.save(probe(kernel='--kernel' in sys.argv[2:]), sys.argv[1])
