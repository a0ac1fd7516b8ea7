# BiXT-Ti/16 + BiXTFeaturePyramid (with an FPN top-down path) + Semantic FPN head.
norm_cfg = dict(type='SyncBN', requires_grad=True)  # mmengine turns it into BN without DDP
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='BiXTBackbone',
        arch='bixt_ti_l64_d13_p16',
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.1),
    neck=dict(
        type='BiXTFeaturePyramid',
        in_channels=192,
        in_stride=16,  # the backbone's token stride: 16, 8 or 4
        out_strides=(4, 8, 16, 32),
        norm_cfg=norm_cfg,
        fpn=dict(type='FPN', in_channels=[192, 192, 192, 192], out_channels=256, num_outs=4)),
    decode_head=dict(
        type='FPNHead',
        in_channels=[256, 256, 256, 256],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=128,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
