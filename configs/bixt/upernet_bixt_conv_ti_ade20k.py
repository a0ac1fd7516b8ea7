# UPerNet + conv-tokenizer BiXT-Ti/16 (d13) on ADE20K: the recipe of upernet_bixt_ti_ade20k.py
# with another backbone (neck, heads and layer decay follow it; batch and lr: see there).
_base_ = ['./upernet_bixt_ti_ade20k.py']
checkpoint = 'checkpoints/bixt_conv_ti_l64_d13_p16.zip'
model = dict(backbone=dict(arch='bixt_conv_ti_l64_d13_p16', init_cfg=dict(checkpoint=checkpoint)))
