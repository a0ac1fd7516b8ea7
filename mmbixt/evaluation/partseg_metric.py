"""``PartSegMetric``: instance and class mIoU of part segmentation (ShapeNetPart protocol)."""
from __future__ import annotations

from collections import defaultdict
from typing import Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmseg.registry import METRICS

from ..datasets.shapenet_part import CATEGORY_NAMES, CATEGORY_PARTS


def shape_iou(pred: np.ndarray, gt: np.ndarray, parts: Sequence[int]) -> float:
    """Mean IoU over the parts of the shape's category; a part absent from both prediction and
    truth counts as 1 (the usual ShapeNetPart convention)."""
    ious = []
    for part in parts:
        pred_part, gt_part = pred == part, gt == part
        union = np.logical_or(pred_part, gt_part).sum()
        ious.append(1.0 if union == 0 else np.logical_and(pred_part, gt_part).sum() / union)
    return float(np.mean(ious))


def _to_numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, 'detach') else np.asarray(value)


@METRICS.register_module()
class PartSegMetric(BaseMetric):
    """Instance mIoU (mean over shapes) and class mIoU (mean over categories of their shapes' mean),
    both in percent, as ``ins_mIoU`` and ``cls_mIoU``; a per-category table goes to the log.

    Reads ``pred_parts``, ``gt_parts`` and the metainfo ``category`` of each data sample. The parts of
    each category come from the dataset's ``category_parts`` (ShapeNetPart's by default).
    """

    default_prefix: Optional[str] = None

    def __init__(self, collect_device: str = 'cpu', prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)

    def _table(self) -> tuple[Sequence[str], Sequence[Sequence[int]]]:
        meta = self.dataset_meta or {}
        return meta.get('classes', CATEGORY_NAMES), meta.get('category_parts', CATEGORY_PARTS)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        _, category_parts = self._table()
        for sample in data_samples:
            category = int(sample['category'])
            iou = shape_iou(_to_numpy(sample['pred_parts']), _to_numpy(sample['gt_parts']),
                            category_parts[category])
            self.results.append((category, iou))

    def compute_metrics(self, results: list) -> dict[str, float]:
        names, _ = self._table()
        if not results:
            raise ValueError('PartSegMetric got no predictions: is the evaluation dataset empty?')
        per_category: dict[int, list[float]] = defaultdict(list)
        for category, iou in results:
            per_category[category].append(iou)
        category_miou = {c: float(np.mean(v)) for c, v in sorted(per_category.items())}
        print_log(self.format_table(names, per_category, category_miou), logger='current')
        return {'ins_mIoU': round(100 * float(np.mean([iou for _, iou in results])), 2),
                'cls_mIoU': round(100 * float(np.mean(list(category_miou.values()))), 2)}

    @staticmethod
    def format_table(names: Sequence[str], per_category: dict, category_miou: dict) -> str:
        rows = [f'{"category":<12}{"shapes":>8}{"mIoU":>8}']
        rows += [f'{names[c]:<12}{len(per_category[c]):>8}{100 * m:>8.2f}'
                 for c, m in category_miou.items()]
        return 'per-category part mIoU:\n' + '\n'.join(rows)
