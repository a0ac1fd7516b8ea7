"""PartSegMetric against hand-computed instance and class mIoU."""
import numpy as np
import pytest
import torch

from mmbixt.evaluation import PartSegMetric, shape_iou

MUG, TABLE = 11, 15  # categories; Mug parts 36-37, Table parts 47-49


def sample(category, pred, gt):
    return dict(category=category, pred_parts=torch.tensor(pred), gt_parts=torch.tensor(gt))


def test_shape_iou_counts_parts_absent_from_both_as_one():
    # part 47: inter 1, union 2 -> 0.5; part 48: inter 1, union 2 -> 0.5; part 49 absent -> 1
    assert shape_iou(np.array([47, 47, 48]), np.array([47, 48, 48]), (47, 48, 49)) == \
        pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # a part predicted but absent from the truth counts 0
    assert shape_iou(np.array([36, 37]), np.array([36, 36]), (36, 37)) == pytest.approx(0.25)


def test_instance_and_class_miou():
    metric = PartSegMetric()
    metric.process({}, [sample(MUG, [36, 36, 37, 37], [36, 36, 37, 37]),   # IoU 1
                        sample(MUG, [36, 36, 36, 36], [36, 36, 37, 37]),   # (0.5 + 0) / 2 = 0.25
                        sample(TABLE, [47, 48, 48], [47, 47, 48])])        # (0.5 + 0.5 + 1) / 3
    result = metric.compute_metrics(metric.results)
    table = 2 / 3
    assert result['ins_mIoU'] == pytest.approx(round(100 * (1 + 0.25 + table) / 3, 2))
    assert result['cls_mIoU'] == pytest.approx(round(100 * ((1 + 0.25) / 2 + table) / 2, 2))
    assert result['ins_mIoU'] == pytest.approx(63.89)
    assert result['cls_mIoU'] == pytest.approx(64.58)


def test_per_category_table_lists_each_category():
    names = ('Mug', 'Table')
    text = PartSegMetric.format_table(names, {0: [1.0, 0.5], 1: [0.25]}, {0: 0.75, 1: 0.25})
    assert 'Mug' in text and '75.00' in text and 'Table' in text and '25.00' in text
