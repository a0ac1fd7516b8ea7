# The point-cloud demo (tools/demo_points.py): the ShapeNetPart config on the procedural shapes of
# mmbixt.datasets.synthetic_shapes, shrunk to train in about a minute on 2 CPU cores
# (a narrow 3-layer BiXT: D=64, 2 heads, 32 latents; 256 points in 32 groups of 16).
_base_ = ['./partseg_bixt_ti_shapenetpart.py']

data_root = 'demo_output/shapenetpart'
num_points = 256
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=8, **loader,
                        dataset=dict(data_root=data_root, num_points=num_points))
val_dataloader = dict(batch_size=16, **loader, dataset=dict(data_root=data_root))  # every point
test_dataloader = val_dataloader

model = dict(
    backbone=dict(arch=dict(embed_dims=64, num_heads=2, num_latents=32, num_layers=3),
                  out_indices=(0, 1, 2), drop_path_rate=0.0,
                  tokenizer=dict(type='grouped', num_groups=32, group_size=16, hidden_dims=64)),
    decode_head=dict(channels=64, dropout=0.1))

max_iters = 300
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=20, end=max_iters),
]
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=max_iters, max_keep_ckpts=1, save_best=None))
