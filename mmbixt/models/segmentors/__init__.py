"""mmbixt segmentors (registered on import)."""
from .bixt_encoder_decoder import BiXTEncoderDecoder
from .point_data_preprocessor import PointDataPreprocessor
from .point_segmentor import PointPartSegmentor

__all__ = ['BiXTEncoderDecoder', 'PointDataPreprocessor', 'PointPartSegmentor']
