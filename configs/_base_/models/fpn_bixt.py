# BiXT-Ti/16 + BiXTFeaturePyramid (with an FPN top-down path) + Semantic FPN head.
# The FPN's input widths follow the backbone (BiXTEncoderDecoder).
_base_ = ['./bixt_pyramid.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    neck=dict(
        fpn=dict(type='FPN', out_channels=256, num_outs=4)),
    decode_head=dict(
        type='FPNHead',
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=128,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
