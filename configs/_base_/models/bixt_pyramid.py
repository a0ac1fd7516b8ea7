# BiXT-Ti/16 and BiXTFeaturePyramid, the shared start of the UPerNet and Semantic FPN models: the
# refined tokens of four layers become the 1/4 - 1/32 pyramid the heads expect.
# BiXTEncoderDecoder takes the neck's width and stride and the heads' input widths from the
# backbone: a config names the backbone only (a restated value that disagrees is refused).
norm_cfg = dict(type='SyncBN', requires_grad=True)  # mmengine turns it into BN without DDP
# mmseg's SegDataPreProcessor that also batches test images of different sizes (each image then
# gets exactly its batch-1 prediction: --cfg-options test_dataloader.batch_size=N).
data_preprocessor = dict(
    type='BiXTSegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512))
model = dict(
    type='BiXTEncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='BiXTBackbone',
        arch='bixt_ti_l64_d13_p16',
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.1),
    neck=dict(type='BiXTFeaturePyramid', out_strides=(4, 8, 16, 32), norm_cfg=norm_cfg),
    train_cfg=dict(),
    # Whole-image inference (the images are resized to fit 2048x512). Sliding 512x512 windows
    # (any token stride divides 512) instead: --cfg-options model.test_cfg.mode=slide
    test_cfg=dict(mode='whole', crop_size=(512, 512), stride=(341, 341)))
