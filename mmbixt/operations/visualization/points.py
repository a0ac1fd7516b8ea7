"""Part segmentation of one point cloud: truth and prediction side by side, from two labelled
viewpoints, each view filling its frame (orthographic projection, depth-sorted and depth-shaded
points)."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ...evaluation import shape_iou
from .colours import distinct_colours

# (yaw about the up axis, elevation) in degrees: from the front-left side, nearly level, and from
# high above, so the two views differ even for shapes that look alike from every side (a lamp).
VIEWS = ((-35.0, 10.0), (-35.0, 75.0))
PANEL_INCHES = 3.4
DPI = 100


def project(xyz: np.ndarray, yaw: float, elevation: float) -> np.ndarray:
    """``[N, 3]`` points (y up) -> ``[N, 3]`` camera coordinates: right, up, towards the viewer."""
    yaw, elevation = np.radians(yaw), np.radians(elevation)
    turn = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    tilt = np.array([[1, 0, 0], [0, np.cos(elevation), -np.sin(elevation)],
                     [0, np.sin(elevation), np.cos(elevation)]])
    return xyz @ turn.T @ tilt.T


def part_segmentation_figure(xyz: np.ndarray, truth: Optional[np.ndarray], prediction: np.ndarray,
                             parts: Sequence[int],
                             part_names: Optional[Mapping[int, str]] = None,
                             title: str = '', views: Sequence[tuple[float, float]] = VIEWS
                             ) -> Figure:
    """Truth (left) and prediction (right) of one shape, one row per viewpoint, with a legend of
    the category's parts and the shape's IoU (mean over the category's parts, ShapeNetPart's
    convention) in the title; without a truth (a cloud of your own), the prediction alone.

    Args:
        xyz: ``[N, 3]`` points, y up (ShapeNetPart).
        truth, prediction: ``[N]`` global part ids (truth None: unknown).
        parts: the part ids of the shape's category (their order sets the colours).
        part_names: optional names per part id for the legend.
    """
    colours = distinct_colours(len(parts)) / 255
    local = {part: index for index, part in enumerate(parts)}
    cameras = [project(xyz, *view) for view in views]
    extents = [np.ptp(camera[:, :2], axis=0).clip(1e-6) for camera in cameras]
    heights = [PANEL_INCHES * float(np.clip(h / w, 0.35, 2.0)) for w, h in extents]
    figure = Figure(figsize=(2 * PANEL_INCHES + 1.7, sum(heights) + 0.9), dpi=DPI,
                    layout='constrained')
    grid = figure.add_gridspec(len(views), 3, height_ratios=heights,
                               width_ratios=[PANEL_INCHES, PANEL_INCHES, 1.7])
    marker = point_size(len(xyz))
    panels = [('truth', truth), ('prediction', prediction)] if truth is not None else [
        ('prediction', prediction), None]
    wrong = truth != prediction if truth is not None else np.zeros(len(prediction), bool)
    for row, camera in enumerate(cameras):
        for column, panel in enumerate(panels):
            if panel is None:  # no truth: the second column stays empty
                continue
            name, labels = panel
            axes = figure.add_subplot(grid[row, column])
            scatter(axes, camera, colours[[local.get(p, 0) for p in labels]], marker,
                    ringed=wrong if name == 'prediction' else None)
            if row == 0:
                axes.set_title(name if truth is None or column == 0 else
                               f'prediction ({wrong.sum()} of {len(wrong)} points wrong'
                               + (', ringed)' if wrong.any() else ')'),
                               fontsize=11)
            if column == 0:
                axes.set_ylabel(view_label(*views[row]), fontsize=10)
    shown = set(prediction.tolist()) | (set(truth.tolist()) if truth is not None else set())
    handles = [Patch(facecolor=colours[index], edgecolor='0.2',
                     label=' '.join(filter(None, (str(part), (part_names or {}).get(part),
                                                  None if part in shown else '(absent)'))))
               for part, index in local.items()]
    legend_axes = figure.add_subplot(grid[:, 2])
    legend_axes.axis('off')
    legend_axes.legend(handles=handles, loc='center left', frameon=False, fontsize=10,
                       title='parts', title_fontsize=11, alignment='left', handleheight=1.2)
    if truth is None:
        figure.suptitle(f'{title}{": " if title else ""}predicted parts of {len(xyz)} points',
                        fontsize=13)
        return figure
    iou = shape_iou(prediction, truth, parts)
    figure.suptitle(f'{title}{": " if title else ""}shape IoU {100 * iou:.1f}%', fontsize=13)
    return figure


def view_label(yaw: float, elevation: float) -> str:
    """``from the side`` / ``from above`` with the camera's angles."""
    where = ('from above' if elevation >= 45 else 'from below' if elevation <= -45
             else 'from the side')
    return f'{where}\nyaw {yaw:g}°, elevation {elevation:g}°'


def point_size(count: int) -> float:
    """Marker area (points^2) that covers a panel's shape without turning it into a blob."""
    return float(np.clip(8000 / count, 3, 45))


def scatter(axes, camera: np.ndarray, colours: np.ndarray, size: float,
            ringed: Optional[np.ndarray] = None) -> None:
    """Far points first, near points drawn over them and brighter, ``ringed`` points outlined in
    black; the axes fit the shape."""
    order = np.argsort(camera[:, 2])
    depth = camera[order, 2]
    shade = 0.7 + 0.3 * (depth - depth.min()) / max(float(np.ptp(depth)), 1e-6)
    ringed = np.zeros(len(camera), bool) if ringed is None else ringed[order]
    axes.scatter(camera[order, 0], camera[order, 1], c=colours[order] * shade[:, None],
                 s=size, linewidths=np.where(ringed, 1.2, 0.0), edgecolors='black')
    low, high = camera[:, :2].min(0), camera[:, :2].max(0)
    margin = 0.04 * (high - low).max()
    axes.set_xlim(low[0] - margin, high[0] + margin)
    axes.set_ylim(low[1] - margin, high[1] + margin)
    axes.set_aspect('equal', adjustable='box')
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_edgecolor('0.85')
