"""mmbixt evaluation (registered on import)."""
from .partseg_metric import PartSegMetric, shape_iou

__all__ = ['PartSegMetric', 'shape_iou']
