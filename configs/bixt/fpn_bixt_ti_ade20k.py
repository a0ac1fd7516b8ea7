# Semantic FPN + BiXT-Ti/16 (d13) on ADE20K, 512x512 crops, 80k iterations.
# Total batch size 16 = 8 GPUs x 2 images (tools/dist_train.sh CONFIG 8). With fewer GPUs keep
# 16 in total (e.g. 4 GPUs: --cfg-options train_dataloader.batch_size=4) or scale the lr
# (optim_wrapper.optimizer.lr) linearly with the total batch size.
_base_ = [
    '../_base_/models/fpn_bixt.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py'
]
# The released ImageNet checkpoint, as downloaded (a zip), from the weights table of
# https://github.com/mrkshllr/BiXT. None trains from scratch (tools/train.py; also in a child
# config; with other tools set model.backbone.init_cfg=None).
checkpoint = 'checkpoints/bixt_ti_l64_d13_p16.zip'
model = dict(
    backbone=dict(
        arch='bixt_ti_l64_d13_p16', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
