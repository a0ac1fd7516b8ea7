# BiXT-Ti part segmentation on ShapeNetPart (ins_mIoU / cls_mIoU).
#   python tools/train.py configs/bixt/partseg_bixt_ti_shapenetpart.py
#   python tools/test.py configs/bixt/partseg_bixt_ti_shapenetpart.py work_dirs/.../best_ins_mIoU_*.pth
# The schedule (about 160 epochs of the 12k training shapes at batch 32) has not been tuned here.
_base_ = ['../_base_/datasets/shapenetpart.py', '../_base_/models/partseg_bixt.py']

default_scope = 'mmseg'
custom_imports = dict(imports=['mmbixt', 'mmbixt.operations'], allow_failed_imports=False)

max_iters = 60000
val_interval = 2000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'latents': dict(decay_mult=0.0),
                                    'category_embed': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=False, begin=1000, end=max_iters),
]

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=val_interval, max_keep_ckpts=2,
                    save_best='ins_mIoU', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='ConfigConsistencyHook')]  # head parts vs the dataset's parts
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
