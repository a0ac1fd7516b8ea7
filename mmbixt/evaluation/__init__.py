"""mmbixt evaluation (registered on import)."""
from .iou_metric import BiXTIoUMetric
from .partseg_metric import PartSegMetric, shape_iou

__all__ = ['BiXTIoUMetric', 'PartSegMetric', 'shape_iou']
