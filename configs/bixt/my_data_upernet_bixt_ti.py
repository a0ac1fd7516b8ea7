# Your own data: UPerNet + BiXT-Ti/16 on a folder of images and label maps, with a short-run,
# small-image recipe for fine-tuning the released weights (a GPU config: on a CPU an iteration
# takes tens of seconds; my_data_upernet_bixt_cpu.py trains in minutes). Copy this file, then edit
# the marked settings. Layout (one image and one label map of the same size per sample, the same
# relative path and name, suffixes as set below):
#
#   data/my_data/images/train/*.jpg        data/my_data/labels/train/*.png
#   data/my_data/images/val/*.jpg          data/my_data/labels/val/*.png
#
# A label map is a single-channel 8- or 16-bit PNG of class ids (not colours): value i is
# classes[i], 255 is ignored. If your maps use 0 for "unlabelled" and 1..K for the classes, set
# reduce_zero_label = True (0 is then ignored and value i is classes[i - 1]).
# Check it all before training: python tools/check_dataset.py configs/bixt/my_data.py
_base_ = ['./upernet_bixt_ti_ade20k.py']

# --- edit: your data ---
data_root = 'data/my_data'
classes = ('background', 'road', 'car')
palette = [[0, 0, 0], [128, 64, 128], [0, 0, 142]]  # one RGB colour per class (figures only)
img_suffix, seg_map_suffix = '.jpg', '.png'
reduce_zero_label = False
# The released ImageNet checkpoint, as downloaded (a zip), from the weights table of
# https://github.com/mrkshllr/BiXT; None trains from scratch with the from_scratch recipe below.
checkpoint = 'checkpoints/bixt_ti_l64_d13_p16.zip'

# --- the short-run, small-image recipe ---
crop_size = (256, 256)  # training crops; a multiple of the token stride (16)
test_scale = (512, 256)  # images are resized to fit this box (long side, short side) for testing
max_iters = 2000
warmup_iters = 50  # the ADE20K configs warm up for 1500 iterations: far too long for short runs
val_interval = 200

num_classes = len(classes)
dataset_type = 'BiXTSegDataset'  # checks folders, pairs and every label map when built
norm_cfg = dict(type='BN', requires_grad=True)  # one process; SyncBN for several GPUs
model = dict(
    data_preprocessor=dict(size=crop_size),
    # slide inference (test_cfg.mode='slide') uses windows of the training crop
    test_cfg=dict(crop_size=crop_size, stride=(crop_size[0] * 2 // 3, crop_size[1] * 2 // 3)),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint) if checkpoint else None),
    neck=dict(norm_cfg=norm_cfg),
    decode_head=dict(num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=num_classes, norm_cfg=norm_cfg))

# An ordinary mmseg pipeline: the dataset itself checks every sample's files.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(test_scale[0], test_scale[1]), ratio_range=(0.75, 1.5),
         keep_ratio=True),
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
    batch_size=4, num_workers=2,
    dataset=dict(**dataset, data_prefix=dict(img_path='images/train', seg_map_path='labels/train'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=2,
    dataset=dict(**dataset, data_prefix=dict(img_path='images/val', seg_map_path='labels/val'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader

# AdamW, layer decay 0.65 and lr 1e-4 as for ADE20K (not tuned for a batch of 4: try 2e-5..2e-4)
optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', power=1.0, eta_min=0.0, begin=warmup_iters, end=max_iters, by_epoch=False)
]
# checkpoint = None: tools/train.py merges this in (no layer decay: every layer is new; a larger lr
# and a longer warm-up than fine-tuning)
from_scratch = dict(
    optim_wrapper=dict(optimizer=dict(lr=5e-4), paramwise_cfg=dict(layer_decay_rate=1.0)),
    param_scheduler=[
        dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=4 * warmup_iters),
        dict(type='PolyLR', power=1.0, eta_min=0.0, begin=4 * warmup_iters, end=max_iters,
             by_epoch=False)])
train_cfg = dict(max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=val_interval, max_keep_ckpts=2))
