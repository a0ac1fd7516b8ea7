"""Point clouds of different sizes in one batch: each shape gets what it gets alone (geometry,
logits, loss, predictions), and every point of every shape is scored."""
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.structures import BaseDataElement

import mmbixt  # noqa: F401  (registers)
from mmbixt.models.core.point_geometry import farthest_point_sample, knn
from mmbixt.models.segmentors import PointPartSegmentor
from mmbixt.models.segmentors.point_data_preprocessor import pad_point_clouds

SIZES = (41, 64, 23)  # the middle shape is batched with a bigger and a smaller one
TOKENIZERS = {'per_point': dict(type='per_point', hidden_dims=16),
              'grouped': dict(type='grouped', num_groups=8, group_size=6, hidden_dims=16)}


# Small models on one torch thread: faster, above all on a busy machine.
pytestmark = pytest.mark.usefixtures('one_thread')


def clouds(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 6, generator=gen) for n in SIZES]


def segmentor(tokenizer: dict) -> PointPartSegmentor:
    torch.manual_seed(0)
    return PointPartSegmentor(
        backbone=dict(type='PointBiXTBackbone', tokenizer=tokenizer, out_indices=(1, 2),
                      arch=dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=3)),
        decode_head=dict(type='PartSegHead', channels=32, dropout=0.0)).eval()


def batch(points: list[torch.Tensor], categories: list[int], with_labels: bool = True) -> dict:
    samples = []
    for cloud, category in zip(points, categories):
        sample = BaseDataElement(metainfo=dict(category=category))
        if with_labels:  # Chair parts 12-15
            sample.gt_parts = 12 + torch.arange(len(cloud)) % 4
        samples.append(sample)
    return pseudo_collate([dict(inputs=p, data_samples=s) for p, s in zip(points, samples)])


def test_masked_fps_and_knn_see_only_each_shapes_own_points():
    shapes = clouds()
    points, mask = pad_point_clouds([c[:, :3] for c in shapes])
    index = farthest_point_sample(points, 8, mask=mask)
    _, neighbours = knn(points[:, :5], points, 6, ref_mask=mask)
    for row, cloud in enumerate(shapes):
        alone = cloud[None, :, :3]
        assert torch.equal(index[row], farthest_point_sample(alone, 8)[0])
        assert torch.equal(neighbours[row], knn(alone[:, :5], alone, 6)[1][0])
    with pytest.raises(ValueError, match='cannot take 30 samples from a cloud of 23 points'):
        farthest_point_sample(points, 30, mask=mask)


def test_preprocessor_pads_at_the_end_and_masks_the_padding():
    points, mask = pad_point_clouds(clouds())
    assert points.shape == (3, 64, 6) and mask.sum(dim=1).tolist() == list(SIZES)
    assert torch.equal(points[2, :23], clouds()[2]) and not points[2, 23:].any()
    same, none = pad_point_clouds([torch.ones(5, 3)] * 2)
    assert none is None and same.shape == (2, 5, 3)
    with pytest.raises(ValueError, match=r'same C, got \[\(4, 3\), \(4, 6\)\]'):
        pad_point_clouds([torch.ones(4, 3), torch.ones(4, 6)])


@pytest.mark.parametrize('kind', sorted(TOKENIZERS))
def test_a_shape_gets_its_logits_alone_and_in_a_batch(kind):
    model = segmentor(TOKENIZERS[kind])
    shapes, categories = clouds(), [4, 4, 15]
    with torch.no_grad():
        together = model.test_step(batch(shapes, categories))
        for i, cloud in enumerate(shapes):
            alone = model.test_step(batch([cloud], categories[i:i + 1]))[0]
            assert together[i].seg_logits.shape == (SIZES[i], 50)  # every real point, no padding
            torch.testing.assert_close(together[i].seg_logits, alone.seg_logits,
                                       rtol=1e-5, atol=1e-5)
            assert torch.equal(together[i].pred_parts, alone.pred_parts)


@pytest.mark.parametrize('kind', sorted(TOKENIZERS))
def test_the_loss_counts_real_points_only(kind):
    model = segmentor(TOKENIZERS[kind])
    shapes = clouds()[:2]
    with torch.no_grad():
        data = model.data_preprocessor(batch(shapes, [4, 4]), True)
        loss = model(**data, mode='loss')['loss_partseg']
        alone = [model(**model.data_preprocessor(batch([c], [4]), True), mode='loss')
                 ['loss_partseg'] for c in shapes]
    # The mean over every real point of both shapes: each shape weighs by its point count.
    expected = sum(n * value for n, value in zip(SIZES, alone)) / sum(SIZES[:2])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_point_mask_is_checked():
    model = segmentor(TOKENIZERS['per_point'])
    points = torch.randn(2, 10, 6)
    with pytest.raises(ValueError, match=r'point_mask of shape \(2, 9\).*give one bool per point'):
        model.backbone(points, torch.ones(2, 9, dtype=torch.bool))
    holes = torch.ones(2, 10, dtype=torch.bool)
    holes[0, 3] = False
    with pytest.raises(ValueError, match='padding at the end of the row'):
        model.backbone(points, holes)


def test_num_points_none_keeps_every_point(tmp_path):
    from mmbixt.datasets.synthetic_shapes import make_synthetic_shapenetpart
    from mmseg.registry import DATASETS
    root = make_synthetic_shapenetpart(str(tmp_path / 'shapes'), {'test': 1}, points_per_shape=50)
    dataset = DATASETS.build(dict(
        type='ShapeNetPartDataset', data_root=root, split='test', num_points=None,
        pipeline=[dict(type='NormalizePoints'), dict(type='SamplePoints', deterministic=True),
                  dict(type='PackPointInputs')]))
    raw = dataset.get_data_info(0)
    item = dataset[0]
    assert len(item['inputs']) == len(raw['points']) == 50
    normalised = raw['points'][:, :3] - raw['points'][:, :3].mean(axis=0)
    normalised /= np.linalg.norm(normalised, axis=1).max()
    np.testing.assert_allclose(item['inputs'][:, :3].numpy(), normalised, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='num_points must be a positive int or None'):
        DATASETS.build(dict(type='ShapeNetPartDataset', data_root=root, split='test',
                            num_points=0))
