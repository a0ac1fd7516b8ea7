# Your own data on a CPU: a narrow BiXT (the demo's: 4 layers of width 64, 16 latents, token
# stride 8) with UPerNet, trained from scratch with lr 1e-3 for 300 iterations on 160x160 crops.
# Minutes on a laptop-class CPU (docs/datasets.md gives the time and mIoU measured on a 2-core
# machine); my_data_upernet_bixt_ti.py is the BiXT-Ti/16 template for the released weights (a GPU).
# Copy this file next to it, then edit the marked settings. Layout (one image and one label map of
# the same size per sample, the same relative path and name, suffixes as set below):
#
#   data/my_data/images/train/*.jpg        data/my_data/labels/train/*.png
#   data/my_data/images/val/*.jpg          data/my_data/labels/val/*.png
#
# A label map is a single-channel 8- or 16-bit PNG of class ids (not colours; tools/convert_masks.py
# turns palette-coloured masks into ids): value i is classes[i], 255 is ignored. If your maps use 0
# for "unlabelled" and 1..K for the classes, set reduce_zero_label = True.
# Check it all before training: python tools/check_dataset.py configs/bixt/my_data.py
_base_ = ['./upernet_bixt_ti_ade20k.py']

# --- edit: your data ---
data_root = 'data/my_data'
classes = ('background', 'road', 'car')
palette = [[0, 0, 0], [128, 64, 128], [0, 0, 142]]  # one RGB colour per class (figures only)
img_suffix, seg_map_suffix = '.jpg', '.png'
reduce_zero_label = False
train_prefix = dict(img_path='images/train', seg_map_path='labels/train')
val_prefix = dict(img_path='images/val', seg_map_path='labels/val')
checkpoint = None  # no released weights for this width: the from-scratch recipe below

# --- the CPU recipe ---
crop_size = (160, 160)  # training crops; a multiple of the token stride (8)
test_scale = (320, 240)  # images are resized to fit this box (long side, short side)
max_iters = 300
warmup_iters = 30
val_interval = 100
lr = 1e-3

num_classes = len(classes)
dataset_type = 'BiXTSegDataset'  # checks folders, pairs and every label map when built
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    test_cfg=dict(crop_size=crop_size, stride=(crop_size[0] * 2 // 3, crop_size[1] * 2 // 3)),
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
    dict(type='RandomResize', scale=test_scale, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=test_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),  # after Resize: the metric compares at the original size
    dict(type='PackSegInputs')
]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=ratio, keep_ratio=True) for ratio in (0.75, 1.0, 1.25)],
        [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
         dict(type='RandomFlip', prob=1.0, direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')]])
]
dataset = dict(type=dataset_type, data_root=data_root, img_suffix=img_suffix,
               seg_map_suffix=seg_map_suffix, reduce_zero_label=reduce_zero_label,
               metainfo=dict(classes=classes, palette=palette))
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(**dataset, data_prefix=train_prefix, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(**dataset, data_prefix=val_prefix, pipeline=test_pipeline))
test_dataloader = val_dataloader

# From scratch: AdamW without layer decay (every layer is new), a short warm-up, linear decay.
optim_wrapper = dict(optimizer=dict(lr=lr), paramwise_cfg=dict(layer_decay_rate=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', power=1.0, eta_min=0.0, begin=warmup_iters, end=max_iters, by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=val_interval, max_keep_ckpts=2))
