"""init_weights() of our modules says nothing (mmengine's BaseModule logs one multi-line message
per parameter: 445 for BiXT-Ti) and still applies every init_cfg."""
from __future__ import annotations

import logging

import torch
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

import mmbixt  # noqa: F401  (registers)
from mmseg.registry import MODELS

TINY_ARCH = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=4, tokenizer='linear',
                 patch_size=16, stride=16)


class Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.INFO)  # the registries log their look-ups at DEBUG
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def logged_by(call) -> list[str]:
    """What ``call()`` logs through mmengine's logger."""
    logger = MMLogger.get_current_instance()
    records = Records()
    logger.addHandler(records)
    try:
        call()
    finally:
        logger.removeHandler(records)
    return records.messages


def build(cfg: dict):
    init_default_scope('mmseg')
    return MODELS.build(cfg)


def test_backbone_init_weights_is_quiet_and_keeps_the_built_weights():
    backbone = build(dict(type='BiXTBackbone', arch='bixt_ti_l64_d13_p16'))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    assert logged_by(backbone.init_weights) == [] and backbone.is_init
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


def test_init_cfg_still_applies_quietly():
    backbone = build(dict(type='BiXTBackbone', arch=TINY_ARCH, out_indices=(1, 3),
                          init_cfg=dict(type='Constant', layer='Linear', val=0.5, bias=0.0)))
    assert logged_by(backbone.init_weights) == []
    linears = [m for m in backbone.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(bool((m.weight == 0.5).all()) for m in linears)


def test_segmentor_init_weights_is_quiet_and_runs_the_heads_init_cfg():
    norm_cfg = dict(type='BN', requires_grad=True)
    model = build(dict(
        type='BiXTEncoderDecoder',
        backbone=dict(type='BiXTBackbone', arch=TINY_ARCH, out_indices=(0, 1, 2, 3)),
        neck=dict(type='BiXTFeaturePyramid', norm_cfg=norm_cfg,
                  fpn=dict(type='FPN', out_channels=16, num_outs=4)),
        decode_head=dict(type='FPNHead', in_index=[0, 1, 2, 3], feature_strides=[4, 8, 16, 32],
                         channels=16, num_classes=3, norm_cfg=norm_cfg,
                         init_cfg=dict(type='Constant', val=0.25, override=dict(name='conv_seg')))))
    assert logged_by(model.init_weights) == []
    assert bool((model.decode_head.conv_seg.weight == 0.25).all())
    assert model.neck.is_init and model.decode_head.is_init
