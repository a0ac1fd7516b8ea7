"""mmseg's IoUMetric with a per-class table that says which classes the split lacks."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
from mmengine.logging import print_log
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS
from prettytable import PrettyTable

ABSENT = 'absent'


@METRICS.register_module()
class BiXTIoUMetric(IoUMetric):
    """mmseg's ``IoUMetric`` (the same settings and the same numbers), whose per-class table
    writes ``absent`` for a class without a pixel in the split's ground truth, where mmseg prints
    a bare ``nan`` (or, when the model predicted the class somewhere, an IoU of 0 that looks like
    a failure), and names those classes below the table."""

    def compute_metrics(self, results: list) -> dict[str, float]:
        if self.format_only:
            return super().compute_metrics(results)
        intersect, union, predicted, label = (sum(part) for part in zip(*results))
        per_class = self.total_area_to_metrics(intersect, union, predicted, label, self.metrics,
                                               self.nan_to_num, self.beta)
        summary = OrderedDict(
            (name if name == 'aAcc' else 'm' + name, np.round(np.nanmean(values) * 100, 2))
            for name, values in per_class.items())
        per_class.pop('aAcc', None)
        classes = self.dataset_meta['classes']
        absent = np.asarray(label) == 0
        table = PrettyTable()
        table.add_column('Class', list(classes))
        for name, values in per_class.items():
            table.add_column(name, [ABSENT if gone else np.round(value * 100, 2)
                                    for value, gone in zip(np.asarray(values), absent)])
        print_log('per class results:', 'current')
        print_log('\n' + table.get_string(), 'current')
        if absent.any():
            names = ', '.join(name for name, gone in zip(classes, absent) if gone)
            print_log(f'{ABSENT}: no pixel of the ground truth of this split is {names} (their '
                      'IoU counts as 0 in the mean where the model predicted them, else not at '
                      'all)', 'current')
        return dict(summary)
