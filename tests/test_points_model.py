"""Point backbone, part head, segmentor: shapes, category masking, cross-modal init, learning."""
import argparse
import zipfile

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper

import mmbixt  # noqa: F401  (registers)
from mmbixt.checkpoint import CheckpointError
from mmbixt.datasets.shapenet_part import CATEGORY_PARTS
from mmbixt.datasets.synthetic_shapes import make_synthetic_shapenetpart
from mmbixt.evaluation import PartSegMetric
from mmbixt.models.backbones.bixt_point import PointBiXTBackbone
from mmbixt.models.core import BiXTCore
from mmbixt.models.segmentors import PointPartSegmentor
from mmseg.registry import DATASETS

# Small models on one torch thread: faster, above all on a busy machine.
pytestmark = pytest.mark.usefixtures('one_thread')


TINY_ARCH = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=3)
TINY = dict(arch=TINY_ARCH, out_indices=(1, 2))


def tiny_segmentor(tokenizer=None, **head):
    return PointPartSegmentor(
        backbone=dict(type='PointBiXTBackbone', **TINY,
                      tokenizer=tokenizer or dict(type='grouped', num_groups=16, group_size=8)),
        decode_head=dict(type='PartSegHead', in_channels=32, num_inputs=2, channels=32, **head))


@pytest.mark.parametrize('tokenizer, tokens', [(dict(type='per_point'), 64),
                                               (dict(type='grouped', num_groups=16, group_size=8), 16)])
def test_backbone_outputs_per_tokenizer(tokenizer, tokens):
    backbone = PointBiXTBackbone(**TINY, tokenizer=tokenizer)
    points = torch.randn(2, 64, 6)
    out = backbone(points)
    assert len(out.feats) == 2 and all(f.shape == (2, tokens, 32) for f in out.feats)
    assert out.xyz.shape == (2, tokens, 3) and out.latents is None  # only when asked
    if tokens == 64:
        assert torch.equal(out.xyz, points[..., :3])
    with pytest.raises(ValueError, match='expected points with 6 channels'):
        backbone(torch.randn(2, 64, 3))


def test_predictions_stay_in_the_category_and_loss_backpropagates():
    model = tiny_segmentor()
    categories = torch.tensor([11, 15])  # Mug, Table
    points = torch.randn(2, 40, 6)
    logits = model.logits(points, categories)
    assert logits.shape == (2, 40, 50)
    preds = model.decode_head.predict(logits, categories)
    assert set(preds[0].tolist()) <= set(CATEGORY_PARTS[11])
    assert set(preds[1].tolist()) <= set(CATEGORY_PARTS[15])
    loss = model.decode_head.loss(logits, torch.tensor([[36] * 40, [48] * 40]))['loss_partseg']
    loss.backward()
    assert model.backbone.core.latents.grad.abs().sum() > 0
    assert model.backbone.tokenizer.first[0].weight.grad.abs().sum() > 0


def write_released_zip(tmp_path, num_layers=3, dims=32, heads=2, latents=8, layer_scale=False,
                       name='bixt_tiny_l8_d4_p16'):
    """An image checkpoint in the released layout (timm keys, argparse args, zipped folder)."""
    core = BiXTCore(dims, heads, latents, num_layers, one_sided_last=True,
                    layer_scale_init=1e-5 if layer_scale else None)
    state = dict(core.state_dict())
    state.update({'patch_embed.proj.weight': torch.randn(dims, 3, 16, 16),
                  'patch_embed.proj.bias': torch.randn(dims),
                  'fourier_pos_encode.token_projection.weight': torch.randn(dims, 64, 1, 1),
                  'fourier_pos_encode.token_projection.bias': torch.randn(dims),
                  'fourier_pos_encode.pos': torch.randn(64, 14, 14),
                  'fc_norm.weight': torch.ones(dims), 'fc_norm.bias': torch.zeros(dims),
                  'head.weight': torch.randn(1000, dims), 'head.bias': torch.zeros(1000)})
    folder = tmp_path / name
    folder.mkdir()
    torch.save({'arch': name, 'epoch': 1, 'version': 2, 'state_dict': state,
                'args': argparse.Namespace(model=name, lr=1e-3)},
               folder / 'model_best.pth.tar')
    path = tmp_path / f'{name}.zip'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.write(folder / 'model_best.pth.tar', f'{name}/model_best.pth.tar')
    return str(path), state


def test_cross_modal_init_loads_the_core_and_reports(tmp_path):
    path, state = write_released_zip(tmp_path)
    backbone = PointBiXTBackbone(**TINY, init_cfg=dict(type='Pretrained', checkpoint=path))
    tokenizer_before = backbone.tokenizer.first[0].weight.clone()
    report = backbone.load_pretrained(path)
    torch.testing.assert_close(backbone.core.latents, state['latents'])
    for i in range(3):
        key = f'blocks.{i}.cross_attention_latents_token.attn.rv_patches.weight'
        torch.testing.assert_close(backbone.state_dict()['core.' + key], state[key])
    assert torch.equal(backbone.tokenizer.first[0].weight, tokenizer_before)
    assert len(report.loaded) == len(backbone.core.state_dict())
    assert report.new and all(k.startswith(('tokenizer.', 'out_norms.')) for k in report.new)
    dropped = ' '.join(report.dropped)
    for part in ('patch_embed.', 'fourier_pos_encode.', 'core.blocks.3.', 'fc_norm.', 'head.'):
        assert part in dropped
    line = report.summary(path, 'bixt_tiny_l8_d4_p16')
    assert 'left new' in line and 'tokenizer' in line and 'patch_embed' in line


def test_cross_modal_init_through_the_config_path(tmp_path):
    path, state = write_released_zip(tmp_path)
    model = PointPartSegmentor(
        backbone=dict(type='PointBiXTBackbone', **TINY,
                      init_cfg=dict(type='Pretrained', checkpoint=path)),
        decode_head=dict(type='PartSegHead', in_channels=32, num_inputs=2, channels=32))
    model.init_weights()
    torch.testing.assert_close(model.backbone.core.latents, state['latents'])


def test_cross_modal_init_refuses_too_few_layers(tmp_path):
    path, _ = write_released_zip(tmp_path, num_layers=2)
    backbone = PointBiXTBackbone(**TINY)
    with pytest.raises(CheckpointError, match='has 2 bi-directional layers.*runs 3'):
        backbone.load_pretrained(path)


def test_point_backbone_with_layer_scale_loads_an_image_files_core(tmp_path):
    path, state = write_released_zip(tmp_path, layer_scale=True)
    backbone = PointBiXTBackbone(arch=dict(TINY_ARCH, layer_scale=True), out_indices=(1, 2))
    report = backbone.load_pretrained(path)
    key = 'blocks.1.cross_attention_latents_token.ls1_pat.gamma'
    assert torch.equal(backbone.state_dict()['core.' + key], state[key])
    assert len(report.loaded) == len(backbone.core.state_dict())


@pytest.mark.parametrize('file_has_layer_scale', [True, False])
def test_layer_scale_mismatch_is_refused(tmp_path, file_has_layer_scale):
    path, _ = write_released_zip(tmp_path, layer_scale=file_has_layer_scale)
    backbone = PointBiXTBackbone(arch=dict(TINY_ARCH, layer_scale=not file_has_layer_scale),
                                 out_indices=(1, 2))
    expected = 'has LayerScale' if file_has_layer_scale else 'has no LayerScale'
    with pytest.raises(CheckpointError, match=expected):
        backbone.load_pretrained(path)


def test_point_and_image_backbones_share_arch_out_indices_and_core_settings():
    from mmbixt.models.backbones import BiXTBackbone
    common = dict(arch=dict(TINY_ARCH, layer_scale=True), out_indices=(2, -3),
                  drop_path_rate=0.2, self_drop_path_rate=0.1,
                  execution=dict(with_cp=True, train_chunk_size=7, stream_chunk_size=9))
    point, image = PointBiXTBackbone(**common), BiXTBackbone(**common)
    assert point.out_indices == image.out_indices == (2, 0)  # order kept, negatives resolved
    assert point.core.execution == image.core.execution
    assert point.core.execution.with_cp and point.core.execution.train_chunk_size == 7
    assert point.core.execution.stream_chunk_size == 9
    assert point.core.state_dict().keys() == image.core.state_dict().keys()
    rates = [rate for b in point.core.blocks
             for rate in (b.cross_attention_latents_token.drop_path.drop_prob,
                          getattr(b.self_attention_latents.drop_path, 'drop_prob', 0.0))]
    assert rates == pytest.approx([0.0, 0.0, 0.1, 0.05, 0.2, 0.1])
    with pytest.raises(ValueError, match='out of range for 3 layers'):
        PointBiXTBackbone(arch=TINY_ARCH, out_indices=(3,))


@pytest.mark.parametrize('with_latents', [False, True])
def test_latents_only_when_asked_and_then_trained(with_latents):
    backbone = PointBiXTBackbone(arch=TINY_ARCH, out_indices=(1,), with_latents=with_latents,
                                 tokenizer=dict(type='per_point'))
    out = backbone(torch.randn(2, 20, 6))
    assert (out.latents is not None) == with_latents
    loss = out.feats[0].sum() + (out.latents.sum() if with_latents else 0)
    loss.backward()
    latent_side = backbone.core.blocks[1].self_attention_latents.attn.qkv.weight
    assert latent_side.requires_grad == with_latents
    assert (latent_side.grad is not None) == with_latents
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)


def test_head_interpolation_is_exact_at_the_token_positions():
    from mmbixt.models.heads.partseg_head import interpolate_features
    points = torch.randn(2, 50, 3)
    feats = torch.randn(2, 50, 8)
    order = torch.randperm(50)
    # Per-point tokens in another order than the points (as an FPS-ordered tokenizer emits them).
    out = interpolate_features(points, points[:, order], feats[:, order])
    assert torch.equal(out, feats)
    between = interpolate_features(points[:, :1] * 0.5 + points[:, 1:2] * 0.5, points, feats)
    assert not torch.equal(between, feats[:, :1])  # elsewhere: a weighted mean


def test_head_reads_per_point_tokens_at_their_own_points():
    model = tiny_segmentor(tokenizer=dict(type='per_point'), dropout=0.0).eval()
    points, categories = torch.randn(1, 30, 6), torch.tensor([3])
    order = torch.randperm(30)
    with torch.no_grad():
        logits = model.logits(points, categories)
        shuffled = model.logits(points[:, order], categories)
    # Each point's logits follow the point, not its position in the list.
    torch.testing.assert_close(shuffled, logits[:, order], atol=1e-5, rtol=1e-5)


def evaluate(model, dataset) -> dict:
    metric = PartSegMetric()
    model.eval()
    with torch.no_grad():
        for start in range(0, len(dataset), 16):
            batch = pseudo_collate([dataset[i] for i in range(start, min(start + 16, len(dataset)))])
            outputs = model.test_step(batch)
            metric.process(batch, [o.to_dict() for o in outputs])
    return metric.compute_metrics(metric.results)


def test_short_training_beats_the_untrained_model(tmp_path):
    torch.manual_seed(0)
    np.random.seed(0)
    root = make_synthetic_shapenetpart(str(tmp_path / 'shapes'), {'train': 8, 'test': 3},
                                       points_per_shape=256)
    common = dict(type='ShapeNetPartDataset', data_root=root, num_points=128)
    train = DATASETS.build(dict(common, split='train', pipeline=[
        dict(type='NormalizePoints'), dict(type='SamplePoints'),
        dict(type='RandomScaleShiftPoints', scale=(0.9, 1.1), shift=0.05),
        dict(type='PackPointInputs')]))
    test = DATASETS.build(dict(common, split='test', pipeline=[
        dict(type='NormalizePoints'), dict(type='SamplePoints', deterministic=True),
        dict(type='PackPointInputs')]))
    model = tiny_segmentor(dropout=0.0)
    before = evaluate(model, test)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    wrapper = OptimWrapper(optimizer)
    model.train()
    order = np.random.permutation(np.arange(200 * 8) % len(train))
    for step in range(200):
        index = [order[(step * 8 + j) % len(order)] for j in range(8)]
        model.train_step(pseudo_collate([train[i] for i in index]), wrapper)
    after = evaluate(model, test)
    print(f'untrained {before}, trained {after}')
    assert before['ins_mIoU'] < 45
    assert after['ins_mIoU'] > 70 and after['cls_mIoU'] > 65
    assert after['ins_mIoU'] - before['ins_mIoU'] > 30
