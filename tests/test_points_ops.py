"""FPS, kNN and 3-NN interpolation against brute-force references and hand-made cases."""
import numpy as np
import torch

from mmbixt.models.core.point_geometry import farthest_point_sample, gather_points, knn
from mmbixt.models.heads.partseg_head import interpolate_features


def brute_fps(xyz: np.ndarray, num: int) -> list[int]:
    chosen = [0]
    for _ in range(num - 1):
        dist = np.min(((xyz[:, None] - xyz[chosen][None]) ** 2).sum(-1), axis=1)
        chosen.append(int(np.argmax(dist)))
    return chosen


def test_fps_matches_brute_force_per_shape():
    torch.manual_seed(0)
    xyz = torch.randn(3, 200, 3)
    index = farthest_point_sample(xyz, 16)
    assert index.shape == (3, 16)
    for b in range(3):
        assert index[b].tolist() == brute_fps(xyz[b].numpy(), 16)


def test_fps_on_a_line_picks_the_extremes_then_the_middle():
    xyz = torch.zeros(1, 11, 3)
    xyz[0, :, 0] = torch.arange(11.0)  # points 0..10 on the x axis
    assert farthest_point_sample(xyz, 3)[0].tolist() == [0, 10, 5]


def test_knn_matches_sorting_and_gathers_the_right_points():
    torch.manual_seed(1)
    ref, query = torch.randn(2, 50, 3), torch.randn(2, 7, 3)
    dist, index = knn(query, ref, 4)
    full = ((query[:, :, None] - ref[:, None]) ** 2).sum(-1)
    expected = full.argsort(dim=-1)[..., :4]
    assert torch.equal(index, expected)
    torch.testing.assert_close(dist, full.gather(-1, expected), atol=1e-5, rtol=1e-5)
    picked = gather_points(ref, index)  # [2, 7, 4, 3]
    torch.testing.assert_close(picked[1, 3, 0], ref[1, index[1, 3, 0]])


def test_interpolation_hand_computed_weights():
    src_xyz = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [0.0, 2, 0], [9.0, 9, 9]]])
    src_feats = torch.tensor([[[1.0], [2.0], [4.0], [100.0]]])
    dst = torch.tensor([[[0.5, 0, 0]]])
    # squared distances to the 3 nearest: 0.25, 0.25, 4.25 -> weights 4, 4, 1/4.25
    w = torch.tensor([4.0, 4.0, 1 / 4.25])
    expected = (w * torch.tensor([1.0, 2.0, 4.0])).sum() / w.sum()
    out = interpolate_features(dst, src_xyz, src_feats)
    torch.testing.assert_close(out[0, 0, 0], expected)


def test_interpolation_is_exact_at_sources_and_keeps_constants():
    torch.manual_seed(2)
    src_xyz, src_feats = torch.rand(2, 20, 3), torch.randn(2, 20, 5)
    torch.testing.assert_close(interpolate_features(src_xyz, src_xyz, src_feats), src_feats,
                               atol=1e-4, rtol=1e-4)
    const = torch.full((2, 20, 5), 3.0)
    torch.testing.assert_close(interpolate_features(torch.rand(2, 30, 3), src_xyz, const),
                               torch.full((2, 30, 5), 3.0))


def per_shape_fps(xyz: torch.Tensor, num: int) -> torch.Tensor:
    """The unbatched formulation: one shape at a time, as a Python loop per sample."""
    out = []
    for shape in xyz:
        nearest = torch.full((shape.shape[0],), float('inf'))
        chosen = [0]
        for _ in range(num - 1):
            nearest = torch.minimum(nearest, (shape - shape[chosen[-1]]).square().sum(-1))
            chosen.append(int(nearest.argmax()))
        out.append(chosen)
    return torch.tensor(out)


def test_batched_fps_and_knn_equal_per_shape_loops_on_random_clouds():
    torch.manual_seed(3)
    for batch, points, samples in ((1, 64, 64), (4, 500, 37), (3, 1024, 128)):
        xyz = torch.rand(batch, points, 3)
        index = farthest_point_sample(xyz, samples)
        assert torch.equal(index, per_shape_fps(xyz, samples))
        centres = gather_points(xyz, index)
        dist, nearest = knn(centres, xyz, 8)
        for b in range(batch):  # per shape, per query
            d, i = knn(centres[b:b + 1], xyz[b:b + 1], 8)
            assert torch.equal(i[0], nearest[b]) and torch.equal(d[0], dist[b])
