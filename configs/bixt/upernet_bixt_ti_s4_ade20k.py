# UPerNet + BiXT-Ti/4 (d13) on ADE20K:
# the recipe of upernet_bixt_ti_ade20k.py with another backbone.
# Total batch size 16 = 8 GPUs x 2 images (tools/dist_train.sh CONFIG 8). With fewer GPUs keep
# 16 in total (e.g. 4 GPUs: --cfg-options train_dataloader.batch_size=4) or scale the lr
# (optim_wrapper.optimizer.lr) linearly with the total batch size.
_base_ = ['./upernet_bixt_ti_ade20k.py']
checkpoint = 'checkpoints/bixt_ti_l64_d13_p16s4.zip'
model = dict(
    backbone=dict(
        arch='bixt_ti_l64_d13_p16s4', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_stride=4))
