default_scope = 'mmseg'
custom_imports = dict(imports=['mmbixt'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # nccl on GPUs; tools/train.py uses gloo when the machine has no CUDA device
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
tta_model = dict(type='SegTTAModel')
# The latent-side modules of the last returned layer (its latent MLP and self-attention) do not
# reach any output map, so DDP must tolerate parameters without gradients.
find_unused_parameters = True
