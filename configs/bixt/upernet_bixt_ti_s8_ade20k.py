# UPerNet + BiXT-Ti/8 (d13) on ADE20K: the recipe of upernet_bixt_ti_ade20k.py
# with another backbone (neck, heads and layer decay follow it; batch and lr: see there).
_base_ = ['./upernet_bixt_ti_ade20k.py']
checkpoint = 'checkpoints/bixt_ti_l64_d13_p16s8.zip'
model = dict(backbone=dict(arch='bixt_ti_l64_d13_p16s8', init_cfg=dict(checkpoint=checkpoint)))
