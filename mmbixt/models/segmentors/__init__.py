"""mmbixt segmentors (registered on import)."""
from .point_data_preprocessor import PointDataPreprocessor
from .point_segmentor import PointPartSegmentor

__all__ = ['PointDataPreprocessor', 'PointPartSegmentor']
