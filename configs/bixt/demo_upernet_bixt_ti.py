# A minute-scale version of upernet_bixt_ti_ade20k.py for `make demo` and the tests: procedural
# ADE20K-layout scenes (tools/demo.py writes them), 128x128 crops, 5 classes, a narrower and
# shallower BiXT at token stride 8 (trained from scratch, so no checkpoint), small heads, BN
# instead of SyncBN, one process (batch 4).
_base_ = ['./upernet_bixt_ti_ade20k.py']
data_root = 'demo_output/data'
dataset_type = 'SyntheticADE20KDataset'
num_classes = 5
crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    test_cfg=dict(crop_size=crop_size, stride=(85, 85)),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=64, num_heads=2, num_latents=16, num_layers=4,
                  tokenizer='linear', patch_size=16, stride=8),
        out_indices=(0, 1, 2, 3), drop_path_rate=0.0, init_cfg=None),
    neck=dict(norm_cfg=norm_cfg),
    decode_head=dict(channels=64, num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(channels=32, num_classes=num_classes, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegSample'),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 128), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegSample'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=1e-3), paramwise_cfg=dict(layer_decay_rate=0.9))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', power=1.0, eta_min=0.0, begin=20, end=80, by_epoch=False)
]
train_cfg = dict(max_iters=80, val_interval=80)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=40, max_keep_ckpts=2))
