# Your own point clouds: part segmentation with your categories and part tables, a narrow BiXT
# (the point demo's: 3 layers of width 64, 32 latents; 256 points in 32 groups of 16) that trains on
# a CPU. Layout under data_root (docs/points.md, "Your own clouds"):
#
#   data/my_points/mug/0001.txt      rows: x y z part          (use_normals = False)
#   data/my_points/table/0001.txt    or:   x y z nx ny nz part (use_normals = True)
#   data/my_points/train.txt         one <category>/<name> per line; val.txt, test.txt alike
#
# part is the index of the point's part in its category's list below (0, 1, ...).
_base_ = ['./partseg_bixt_ti_shapenetpart.py']

# --- edit: your data ---
data_root = 'data/my_points'
categories = dict(mug=('body', 'handle'), table=('top', 'legs'))  # or a JSON file's path
use_normals = False  # True: clouds carry normals (7 columns) and the model reads 6 channels
num_points = 256  # points sampled from each training cloud
# --- the model and recipe ---
num_groups = 32  # point groups (tokens) per cloud; clouds need at least this many points
max_iters = 300

# The parts of all categories numbered in order: the head's table of which parts each category has.
category_parts = [tuple(range(sum(len(p) for p in list(categories.values())[:i]),
                              sum(len(p) for p in list(categories.values())[:i + 1])))
                  for i in range(len(categories))]
num_parts = sum(len(p) for p in categories.values())
model = dict(
    backbone=dict(arch=dict(embed_dims=64, num_heads=2, num_latents=32, num_layers=3),
                  in_channels=6 if use_normals else 3, out_indices=(0, 1, 2), drop_path_rate=0.0,
                  tokenizer=dict(type='grouped', num_groups=num_groups, group_size=16,
                                 hidden_dims=64)),
    decode_head=dict(channels=64, dropout=0.1, num_classes=num_parts,
                     category_parts=category_parts))

dataset = dict(type='PointPartDataset', data_root=data_root, categories=categories,
               use_normals=use_normals, min_points=num_groups)
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=8, **loader, dataset=dict(
    _delete_=True, **dataset, split_file='train.txt', num_points=num_points,
    pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(batch_size=16, **loader, dataset=dict(
    _delete_=True, **dataset, split_file='val.txt', num_points=None, test_mode=True,
    pipeline={{_base_.test_pipeline}}))
test_dataloader = dict(batch_size=16, **loader, dataset=dict(
    _delete_=True, **dataset, split_file='test.txt', num_points=None, test_mode=True,
    pipeline={{_base_.test_pipeline}}))

train_cfg = dict(max_iters=max_iters, val_interval=100)
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=20, end=max_iters),
]
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=100, max_keep_ckpts=1, save_best=None))
