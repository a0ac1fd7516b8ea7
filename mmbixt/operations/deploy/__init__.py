"""Deployment: export of the segmentors to ONNX and their check in ONNX Runtime."""
from .onnx import (ExportError, ImageSegmentorGraph, PointSegmentorGraph, export_segmentor,
                   load_segmentor, ort_session, verify_export)

__all__ = ['ExportError', 'ImageSegmentorGraph', 'PointSegmentorGraph', 'export_segmentor',
           'load_segmentor', 'ort_session', 'verify_export']
