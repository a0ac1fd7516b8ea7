"""Figures of what BiXT models predict and where their latents look (matplotlib, no display
needed): ``segmentation_figure`` for images (tools/infer.py), ``part_segmentation_figure`` for
point clouds (tools/demo_points.py)."""
from .attention import AttentionRecorder, LayerAttention, most_distinct, relative_attention
from .files import (InputFileError, check_regular_file, figure_paths, label_paths, read_image,
                    read_label_map)
from .points import part_segmentation_figure
from .segmentation import segmentation_figure

__all__ = ['AttentionRecorder', 'LayerAttention', 'most_distinct', 'relative_attention',
           'InputFileError', 'check_regular_file', 'figure_paths', 'label_paths',
           'read_image', 'read_label_map', 'part_segmentation_figure', 'segmentation_figure']
