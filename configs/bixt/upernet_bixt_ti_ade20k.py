# UPerNet + BiXT-Ti/16 (d13) on ADE20K, 512x512 crops, 160k iterations.
# Total batch size 16 = 8 GPUs x 2 images (tools/dist_train.sh CONFIG 8). With fewer GPUs keep
# 16 in total (e.g. 4 GPUs: --cfg-options train_dataloader.batch_size=4) or scale the lr
# (optim_wrapper.optimizer.lr) linearly with the total batch size.
_base_ = [
    '../_base_/models/upernet_bixt.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
# The released ImageNet checkpoint, as downloaded (a zip); None trains from scratch.
checkpoint = 'checkpoints/bixt_ti_l64_d13_p16.zip'
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch='bixt_ti_l64_d13_p16', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_stride=16))

# AdamW with layer-wise lr decay over the 12 BiXT layers (see BiXTLayerDecayOptimizerConstructor).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='BiXTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.65))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, begin=1500, end=160000, by_epoch=False)
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
