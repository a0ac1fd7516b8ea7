"""ShapeNetPart parsing, point transforms and the error messages for bad input."""
import json

import numpy as np
import pytest

import mmbixt  # noqa: F401  (registers)
from mmbixt.datasets.point_transforms import (NormalizePoints, PackPointInputs,
                                              RandomRotatePoints, SamplePoints)
from mmbixt.datasets.shapenet_part import ShapeNetPartDataError, ShapeNetPartDataset

MUG = '03797390'
TABLE = '04379243'


def write_dataset(root, shapes: dict, split='train', extra_entries=()):
    """``shapes``: ``{(synset, id): rows as text}``; writes the standard layout under ``root``."""
    (root / 'train_test_split').mkdir(parents=True, exist_ok=True)
    (root / 'synsetoffset2category.txt').write_text(f'Mug\t{MUG}\nTable\t{TABLE}\n')
    for (synset, shape_id), text in shapes.items():
        (root / synset).mkdir(exist_ok=True)
        (root / synset / f'{shape_id}.txt').write_text(text)
    entries = [f'shape_data/{s}/{i}' for s, i in shapes] + list(extra_entries)
    (root / 'train_test_split' / f'shuffled_{split}_file_list.json').write_text(json.dumps(entries))
    return str(root)


def rows(parts, offset=0.0):
    return ''.join(f'{i + offset} {2 * i} {-i} 0 1 0 {p}\n' for i, p in enumerate(parts))


def build(root, **kwargs):
    return ShapeNetPartDataset(data_root=root, split='train', **kwargs)


def test_parses_layout_categories_points_and_labels(tmp_path):
    root = write_dataset(tmp_path, {(MUG, 'a'): rows([36, 37, 36]),
                                    (TABLE, 'b'): rows([47, 48, 49, 49])})
    ds = build(root, num_points=4)
    assert len(ds) == 2
    info = ds.get_data_info(1)
    assert info['category'] == 15 and info['shape_id'] == 'b'
    assert info['points'].shape == (4, 6) and info['points'].dtype == np.float32
    np.testing.assert_array_equal(info['gt_parts'], [47, 48, 49, 49])
    np.testing.assert_allclose(info['points'][2], [2, 4, -2, 0, 1, 0])
    assert build(root, use_normals=False).get_data_info(0)['points'].shape == (3, 3)
    assert len(build(root, categories=['Table'])) == 1


def test_pipeline_packs_sampled_points(tmp_path):
    root = write_dataset(tmp_path, {(MUG, 'a'): rows([36] * 10 + [37] * 10)})
    ds = build(root, num_points=8, pipeline=[dict(type='NormalizePoints'),
                                             dict(type='SamplePoints'),
                                             dict(type='PackPointInputs')])
    item = ds[0]
    assert tuple(item['inputs'].shape) == (8, 6)
    sample = item['data_samples']
    assert sample.category == 11 and tuple(sample.gt_parts.shape) == (8,)
    # xyz row i is (i, 2i, -i): the label follows its point through the sampling
    xyz = item['inputs'][:, :3].numpy()
    order = np.argsort(xyz[:, 0])
    assert set(sample.gt_parts.tolist()) <= {36, 37}
    assert np.all(np.diff(sample.gt_parts.numpy()[order]) >= 0)


def test_sampling_fewer_points_than_wanted_keeps_all_and_repeats():
    points = np.arange(15, dtype=np.float32).reshape(5, 3)
    out = SamplePoints(num_points=12)(dict(points=points, gt_parts=np.arange(5), num_points=99))
    assert out['points'].shape == (12, 3)
    assert set(out['gt_parts'].tolist()) == set(range(5))  # every point kept at least once
    np.testing.assert_array_equal(out['points'][:, 0] / 3, out['gt_parts'])


def test_deterministic_sampling_repeats_per_index():
    points = np.random.rand(100, 3).astype(np.float32)
    sampler = SamplePoints(num_points=10, deterministic=True)
    first = sampler(dict(points=points, sample_idx=3))['points']
    again = sampler(dict(points=points, sample_idx=3))['points']
    np.testing.assert_array_equal(first, again)


def test_normalise_and_rotate():
    pts = np.random.rand(50, 6).astype(np.float32) * 5 + 3
    pts[:, 3:] = [1, 0, 0]
    out = NormalizePoints()(dict(points=pts))['points']
    np.testing.assert_allclose(out[:, :3].mean(0), 0, atol=1e-5)
    assert np.linalg.norm(out[:, :3], axis=1).max() == pytest.approx(1, abs=1e-5)
    rotated = RandomRotatePoints(up_axis=1)(dict(points=out))['points']
    np.testing.assert_allclose(rotated[:, 1], out[:, 1], atol=1e-6)  # y (up) unchanged
    np.testing.assert_allclose(np.linalg.norm(rotated[:, :3], axis=1),
                               np.linalg.norm(out[:, :3], axis=1), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rotated[:, 3:], axis=1), 1, atol=1e-5)
    assert PackPointInputs()(dict(points=rotated))['inputs'].shape == (50, 6)


@pytest.mark.parametrize('text, message', [
    ('0 0 0 0 1 0 36\n0 0 0 0 1\n', 'malformed row'),
    ('0 0 0 0 1 0 36\n0 nan 0 0 1 0 36\n', 'NaN or inf'),
    ('0 0 0 0 1 0 36\n0 0 0 0 1 0 47\n', r'part id 47 \(row 2\) is outside its category Mug \(parts 36-37\)'),
    ('0 0 0 0 1 36\n', 'rows have 6 columns'),
])
def test_bad_shape_files_name_file_and_problem(tmp_path, text, message):
    root = write_dataset(tmp_path, {(MUG, 'bad'): text})
    with pytest.raises(ShapeNetPartDataError, match=message) as err:
        build(root).get_data_info(0)
    assert f'{MUG}/bad.txt' in str(err.value)


def test_unknown_synset_in_split_file(tmp_path):
    root = write_dataset(tmp_path, {(MUG, 'a'): rows([36])},
                         extra_entries=['shape_data/01234567/zzz'])
    with pytest.raises(ShapeNetPartDataError, match='unknown synset 01234567') as err:
        build(root)
    assert 'shuffled_train_file_list.json' in str(err.value)


def test_unknown_synset_in_category_file(tmp_path):
    root = write_dataset(tmp_path, {(MUG, 'a'): rows([36])})
    (tmp_path / 'synsetoffset2category.txt').write_text('Spoon\t09999999\n')
    with pytest.raises(ShapeNetPartDataError, match='synsetoffset2category.txt: line 1: unknown '
                       'synset 09999999'):
        build(root)


def test_missing_split_file(tmp_path):
    root = write_dataset(tmp_path, {(MUG, 'a'): rows([36])}, split='train')
    with pytest.raises(ShapeNetPartDataError,
                       match='shuffled_test_file_list.json: split file not found'):
        ShapeNetPartDataset(data_root=root, split='test')


def test_missing_shape_file(tmp_path):
    root = write_dataset(tmp_path, {(MUG, 'a'): rows([36])}, extra_entries=[f'shape_data/{MUG}/gone'])
    with pytest.raises(ShapeNetPartDataError, match='gone.txt: shape file not found'):
        build(root).get_data_info(1)


def test_empty_split_list_is_named(tmp_path):
    root = write_dataset(tmp_path, {})
    with pytest.raises(ShapeNetPartDataError, match='shuffled_train_file_list.json: lists no shapes$'):
        build(root)


def test_split_without_the_chosen_categories_is_named(tmp_path):
    root = write_dataset(tmp_path, {(MUG, 'a'): rows([36])})
    with pytest.raises(ShapeNetPartDataError, match='lists no shapes of the categories Table'):
        build(root, categories=['Table'])
