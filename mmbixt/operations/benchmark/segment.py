"""Section ``segment``: whole-image inference of UPerNet and Semantic FPN segmentors as users
run it, with the backbone/neck/head split and the fast path's pixel agreement."""
from __future__ import annotations

import statistics
import time

from .common import ARCHS, BACKBONES, DIMS, HEADS_VIT, LAYERS, MLP_RATIO, REPO
from .forward import on_fast_path
from .measure import interleaved_with_peaks


def segmentor(head: str, backbone: str, stride: int, size: int):
    """UPerNet or Semantic FPN (our configs' neck width and heads) on BiXT-Ti/``stride`` or on
    mmseg's ViT-Ti/16 (its own ``MultiLevelNeck`` to the same four scales and width)."""
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    import mmbixt  # noqa: F401  (registers BiXT modules)
    register_all_modules(init_default_scope=True)
    name = {'upernet': 'upernet_bixt', 'fpn': 'fpn_bixt'}[head]
    cfg = Config.fromfile(str(REPO / f'configs/_base_/models/{name}.py')).model
    if backbone == 'bixt':
        cfg['backbone'].update(arch=ARCHS[stride], drop_path_rate=0.0)
    else:
        vit_like_bixt_neck(cfg, size)
    _plain_bn(cfg)
    return MODELS.build(cfg)  # a ConfigDict: mmseg reads test_cfg.mode as an attribute


def vit_like_bixt_neck(cfg: dict, size: int) -> None:
    """Turns a BiXT segmentor config into mmseg's ViT-Ti/16 one with the same pyramid and heads."""
    cfg['type'] = 'EncoderDecoder'
    cfg['backbone'] = dict(type='VisionTransformer', img_size=(size, size), patch_size=16,
                           embed_dims=DIMS, num_layers=LAYERS, num_heads=HEADS_VIT,
                           mlp_ratio=MLP_RATIO, out_indices=(2, 5, 8, 11), qkv_bias=True,
                           with_cls_token=True, norm_cfg=dict(type='LN', eps=1e-6),
                           act_cfg=dict(type='GELU'), interpolate_mode='bicubic')
    pyramid = dict(type='MultiLevelNeck', in_channels=[DIMS] * 4, out_channels=DIMS,
                   scales=[4, 2, 1, 0.5])
    fpn = cfg['neck'].get('fpn')
    if fpn:  # Semantic FPN: the pyramid, then mmseg's FPN on it, as BiXTFeaturePyramid does
        fpn = dict(fpn, in_channels=[DIMS] * 4)
        cfg['decode_head']['in_channels'] = [fpn['out_channels']] * 4
    else:
        cfg['decode_head']['in_channels'] = [DIMS] * 4
    cfg['neck'] = [pyramid, fpn] if fpn else pyramid
    if cfg.get('auxiliary_head'):
        cfg['auxiliary_head']['in_channels'] = DIMS


def _plain_bn(cfg) -> None:
    """SyncBN -> BN: one process, no process group."""
    if isinstance(cfg, dict):
        if cfg.get('type') == 'SyncBN':
            cfg['type'] = 'BN'
        for value in cfg.values():
            _plain_bn(value)
    elif isinstance(cfg, list):
        for value in cfg:
            _plain_bn(value)


def whole_image_batch(size: int, seed: int = 0) -> dict:
    """One uint8 image and its metainfo, as a dataloader hands them to ``test_step``."""
    import torch
    from mmseg.structures import SegDataSample
    shape = (size, size)
    image = torch.randint(0, 256, (3,) + shape, dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(seed))
    sample = SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape))
    return dict(inputs=[image], data_samples=[sample])


def segment_group(head: str, size: int, args: dict) -> dict:
    """Whole-image inference of every backbone under ``head`` at ``size``, fp32 and fast path,
    interleaved; the Ti/16 model's backbone/neck/head split; the fast path's pixel agreement."""
    import torch
    torch.manual_seed(0)
    data = whole_image_batch(size)
    functions, models = {}, {}
    for label in args['backbones']:
        kind, stride = BACKBONES[label]
        model = models[label] = segmentor(head, kind, stride, size).eval()
        functions[f'{label} fp32'] = lambda m=model: m.test_step(data)
        if kind == 'bixt':
            functions[f'{label} fast path'] = on_fast_path(lambda m=model: m.test_step(data), model)
    rounds = rounds_at(size, args['rounds'])
    out = {'head': head, 'size': size, 'runs': interleaved_with_peaks(functions, rounds)}
    if 'BiXT-Ti/16' in models:
        model = models['BiXT-Ti/16']
        with torch.no_grad():
            expected = model.test_step(data)[0].pred_sem_seg.data
        actual = on_fast_path(lambda: model.test_step(data), model)()[0].pred_sem_seg.data
        out['agreement'] = (actual == expected).float().mean().item()
        if args['split']:
            out['split'] = {mode: split_times(model, size, mode, rounds)
                            for mode in ('fp32', 'fast path')}
        if size <= 512:
            out['postprocess'] = postprocess_share(model, data, max(rounds, 1))
    return out


def postprocess_share(model, data: dict, rounds: int) -> dict[str, float]:
    """Median ms of the fast path's whole ``test_step`` and of its post-processing alone (the
    fused resize + argmax of the head's logits), interleaved."""
    import torch
    from mmbixt.models.inference import fast_inference
    from mmbixt.models.segmentors.postprocess import image_axis_maps, predict_labels
    with fast_inference(model):
        batch = model.data_preprocessor(data, False)
        metas = [sample.metainfo for sample in batch['data_samples']]
        logits, resized, padded = model.head_logits(batch['inputs'], metas)[0]
    rows, cols = image_axis_maps(metas[0], padded, logits.shape[1:], model.align_corners, resized)
    calls = {'call_ms': on_fast_path(lambda: model.test_step(data), model),
             'ms': lambda: predict_labels(logits, rows, cols)}
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        for _ in range(rounds + 1):  # the first is a warm-up
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def split_times(model, size: int, mode: str, rounds: int) -> dict[str, float]:
    """Median ms of the backbone, the neck and the decode head of one whole-image forward."""
    import torch
    from mmbixt.models.inference import fast_inference
    img = torch.randn(1, 3, size, size)
    times = {'backbone': [], 'neck': [], 'decode head': []}
    for _ in range(rounds + 1):  # the first is a warm-up
        with fast_inference(model) if mode == 'fast path' else torch.no_grad():
            start = time.perf_counter()
            feats = model.backbone(img)
            after_backbone = time.perf_counter()
            feats = model.neck(feats) if model.with_neck else feats
            after_neck = time.perf_counter()
            model.decode_head(feats)
            end = time.perf_counter()
        for part, seconds in zip(times, (after_backbone - start, after_neck - after_backbone,
                                         end - after_neck)):
            times[part].append(seconds * 1e3)
    return {part: statistics.median(values[1:]) for part, values in times.items()}


def rounds_at(size: int, rounds: int) -> int:
    """Segmentor rounds at ``size``: as asked up to 512 px, one above (a 1024 px UPerNet call is
    about 4x a 512 px one; this keeps `make bench` in its budget)."""
    return rounds if size <= 512 else min(rounds, 1)
