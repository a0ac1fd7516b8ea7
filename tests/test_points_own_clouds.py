"""Your own point clouds: PointPartDataset with the config's categories and part tables, clouds of
3 (+ part) or 6 (+ part) columns, the checks of ShapeNetPart's files, check_dataset, and
tools/infer_points.py writing the labelled cloud and its figure."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

import mmbixt.operations  # noqa: F401  (registers)
from mmbixt.datasets.point_parts import PointDataError
from mmbixt.datasets.synthetic_shapes import make_synthetic_point_parts

from conftest import REPO, load_tool

TEMPLATE = REPO / 'configs' / 'bixt' / 'my_points_partseg_bixt.py'


def template(root: Path, categories: dict, **dataset) -> Config:
    cfg = Config.fromfile(str(TEMPLATE))
    cfg.model.decode_head.update(num_classes=5, category_parts=[(0, 1), (2, 3, 4)])
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.update(data_root=str(root), categories=categories, **dataset)
    return cfg


@pytest.fixture(scope='module')
def clouds(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp('my_points')
    return root, make_synthetic_point_parts(str(root), dict(train=4, val=2, test=2),
                                            num_points=120)


def edited_copy(tmp_path: Path, **settings) -> Path:
    """The template copied and its top edited, as a user does (``name = value`` lines)."""
    lines = []
    for line in TEMPLATE.read_text().splitlines():
        key = line.split(' = ')[0]
        lines.append(f'{key} = {settings[key]!r}' if key in settings else line)
    path = tmp_path / 'mine.py'
    path.write_text('\n'.join(lines).replace("'./partseg", f"'{TEMPLATE.parent}/partseg") + '\n')
    return path


def build(cfg_dataset, **changes):
    init_default_scope('mmseg')
    return DATASETS.build({**cfg_dataset, **changes})


def test_own_categories_and_parts_give_global_part_ids(clouds):
    root, categories = clouds
    dataset = build(template(root, categories).train_dataloader.dataset)
    assert dataset.metainfo['classes'] == ('mug', 'table')
    assert dataset.metainfo['category_parts'] == ((0, 1), (2, 3, 4))
    assert dataset.metainfo['part_names'][3] == 'table/legs'
    table = dataset.get_data_info(1)
    assert table['points'].shape == (120, 3) and set(table['gt_parts'].tolist()) <= {2, 3, 4}
    sample = dataset[1]
    assert sample['inputs'].shape == (256, 3)  # sampled to num_points, xyz only


def write_cloud(root: Path, rows: str, entry: str = 'mug/bad') -> None:
    (root / f'{entry}.txt').write_text(rows)
    (root / 'bad.txt').write_text(entry + '\n')


@pytest.mark.parametrize('rows, settings, reason', [
    ('0 0 0 0\n1 1 1 2\n', {}, r'mug/bad\.txt: part 2 \(row 2\) is not a part of its category '
                               r'mug \(parts 0\.\.1\)'),
    ('0 0 0 0 0 1\n1 1 1 0 0 1\n', {}, r'rows have 6 columns; expected 4 numbers: x y z part'),
    ('0 0 0 0\n1 1 1 1\n', dict(use_normals=True), r'rows have 4 columns; expected 7 numbers: '
                                                    r'x y z nx ny nz part \(use_normals=True\)'),
    ('0 0 0 0\n1 1 1 1\n', dict(min_points=32), r'has 2 points, fewer than the 32 point groups'),
    ('0 0 0 0\n1 1 1 1\n0 1 0 1\n', dict(max_points=2), r'has 3 points, above max_points=2'),
])
def test_bad_clouds_are_named(clouds, tmp_path, rows, settings, reason):
    _, categories = clouds
    (tmp_path / 'mug').mkdir()
    write_cloud(tmp_path, rows)
    dataset = build(template(tmp_path, categories).val_dataloader.dataset, split_file='bad.txt',
                    **{'min_points': None, **settings})  # the template's: the model's 32 groups
    with pytest.raises(PointDataError, match=reason):
        dataset.get_data_info(0)


def test_split_lists_name_declared_categories_once(clouds, tmp_path):
    _, categories = clouds
    (tmp_path / 'split.txt').write_text('mug/a\nmug/a\n')
    cfg = template(tmp_path, categories).val_dataloader.dataset
    with pytest.raises(PointDataError, match=r"split\.txt: mug/a is listed 2 times"):
        build(cfg, split_file='split.txt')
    (tmp_path / 'split.txt').write_text('chair/a\n')
    with pytest.raises(PointDataError, match=r"line 1: 'chair/a' is not <category>/<name> of a "
                                             r'declared category \(mug, table\)'):
        build(cfg, split_file='split.txt')


def test_check_dataset_names_a_cloud_with_fewer_points_than_groups(clouds, tmp_path, capsys):
    root, categories = clouds
    # more groups than the 120 points of each cloud
    config = edited_copy(tmp_path, data_root=str(root), categories=categories, num_groups=200)
    assert load_tool('check_dataset').main([str(config), '--splits', 'val', '--workers', '1']) == 1
    out = capsys.readouterr().out
    assert 'val_000.txt: has 120 points, fewer than the 200 point groups' in out


def test_infer_points_writes_the_labelled_cloud_and_figure(clouds, tmp_path, capsys):
    root, categories = clouds
    config = edited_copy(tmp_path, data_root=str(root), categories=categories)
    init_default_scope('mmseg')
    model = MODELS.build(Config.fromfile(str(config)).model)
    checkpoint = tmp_path / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), checkpoint)
    cloud = root / 'table' / 'test_001.txt'
    assert load_tool('infer_points').main([str(config), str(checkpoint), str(cloud),
                                           '--out-dir', str(tmp_path / 'out')]) == 0
    written = np.loadtxt(tmp_path / 'out' / 'test_001_parts.txt')
    assert written.shape == (120, 4) and set(written[:, 3].tolist()) <= {0, 1, 2}
    header = (tmp_path / 'out' / 'test_001_parts.txt').read_text().splitlines()[0]
    assert header == '# x y z part; parts: 0 = top, 1 = legs, 2 = shelf'
    assert (tmp_path / 'out' / 'test_001_parts.png').stat().st_size > 10000
    assert 'points of table: top' in capsys.readouterr().out
    with pytest.raises(PointDataError, match=r"category 'chair' is not one of the config's "
                                             r'\(mug, table\): pass --category NAME'):
        load_tool('infer_points').main([str(config), str(checkpoint), str(cloud), '--category',
                                        'chair', '--out-dir', str(tmp_path / 'out')])
