default_scope = 'mmseg'
custom_imports = dict(imports=['mmbixt', 'mmbixt.operations'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # nccl on GPUs; BiXTRunner (tools/train.py) uses gloo when the machine has no CUDA device
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
tta_model = dict(type='SegTTAModel')
# Stops a training whose loss or gradient norm turns NaN/inf (BiXTRunner adds it when a config lists
# no such hook); max_skipped=N skips up to N such steps in a row first (e.g. with --amp).
# ConfigConsistencyHook refuses a head whose num_classes differs from the dataset's classes, before
# the first iteration.
custom_hooks = [dict(type='NonFiniteLossHook', max_skipped=0), dict(type='ConfigConsistencyHook')]
