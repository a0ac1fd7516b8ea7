# ShapeNetPart part segmentation: 16 categories, 50 parts, points with normals. Training samples
# 2048 points per shape; val and test score every point of every shape (num_points=None: shapes of
# different sizes are batched exactly, with a point mask). The 2048-point protocol instead:
#   --cfg-options val_dataloader.dataset.num_points=2048 test_dataloader.dataset.num_points=2048
dataset_type = 'ShapeNetPartDataset'
data_root = 'data/shapenetcore_partanno_segmentation_benchmark_v0_normal'
num_points = 2048
use_normals = True

train_pipeline = [
    dict(type='NormalizePoints'),
    dict(type='SamplePoints'),  # num_points from the dataset
    dict(type='RandomScaleShiftPoints', scale=(2 / 3, 3 / 2), shift=0.2),
    dict(type='JitterPoints', std=0.01, clip=0.05),
    # ShapeNetPart shapes are aligned: no rotation by default (RandomRotatePoints is available).
    dict(type='PackPointInputs'),
]
test_pipeline = [
    dict(type='NormalizePoints'),
    # No-op with num_points=None; with a number, the same points every evaluation.
    dict(type='SamplePoints', deterministic=True),
    dict(type='PackPointInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', num_points=num_points,
                 use_normals=use_normals, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='val', num_points=None,
                 use_normals=use_normals, pipeline=test_pipeline, test_mode=True))
test_dataloader = dict(
    batch_size=16,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='test', num_points=None,
                 use_normals=use_normals, pipeline=test_pipeline, test_mode=True))
val_evaluator = dict(type='PartSegMetric')
test_evaluator = val_evaluator
