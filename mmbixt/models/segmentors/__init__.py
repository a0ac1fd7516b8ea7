"""mmbixt segmentors (registered on import)."""
from .bixt_encoder_decoder import BiXTEncoderDecoder
from .point_data_preprocessor import PointDataPreprocessor
from .point_segmentor import PointPartSegmentor
from .seg_data_preprocessor import BiXTSegDataPreProcessor

__all__ = ['BiXTEncoderDecoder', 'BiXTSegDataPreProcessor', 'PointDataPreprocessor',
           'PointPartSegmentor']
