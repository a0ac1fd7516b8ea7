# BiXT-Ti on point clouds: grouped tokens (FPS + kNN + PointNet) into the shared BiXT core, and a
# category-conditioned part head reading three layers.
model = dict(
    type='PointPartSegmentor',
    data_preprocessor=dict(type='PointDataPreprocessor'),
    backbone=dict(
        type='PointBiXTBackbone',
        # The BiXT-Ti core of the d13 image models; as for BiXTBackbone, arch is a dict of widths,
        # heads, latents, layers and layer_scale, or a released name.
        arch=dict(embed_dims=192, num_heads=6, num_latents=64, num_layers=12, layer_scale=False),
        in_channels=6,  # xyz + normals
        tokenizer=dict(type='grouped', num_groups=128, group_size=32),
        out_indices=(3, 7, 11),
        drop_path_rate=0.1,
        # Cross-modal init from an image d13 checkpoint (the zip as downloaded):
        # init_cfg=dict(type='Pretrained', checkpoint='checkpoints/bixt_ti_l64_d13_p16.zip'),
        init_cfg=None),
    decode_head=dict(
        type='PartSegHead',
        in_channels=192,
        num_inputs=3,
        point_channels=6,
        channels=256,
        num_classes=50,
        dropout=0.5,
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0, avg_non_ignore=True)))
