"""One figure per segmented image: the input, the prediction and the ground truth (when given) with
a legend of the classes present, then for each recorded layer the latent assignment map, the mean
attention and the most distinct latents."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from .attention import LayerAttention, most_distinct, relative_attention
from .colours import blend, distinct_colours, greyed

IGNORE_COLOUR = (0.55, 0.55, 0.55)
TOP_PANEL_INCHES = 3.6   # width of the input / prediction / truth panels
TILE_INCHES = 2.0        # width of each attention panel
DPI = 100
MIN_WIDTH_INCHES = 12.0  # 1200 px whatever the image's size
DRAW_MAX_SIDE = 1600     # images are drawn from at most this many pixels a side (bounded memory)
ASPECTS = (0.2, 1.8)     # height / width of the panels; images beyond are shown stretched
LEGEND_BESIDE = 14       # up to this many classes the legend sits beside the images
LEGEND_COLUMNS = 6


def segmentation_figure(image: np.ndarray, prediction: np.ndarray,
                        class_names: Sequence[str], palette: Sequence[Sequence[int]],
                        truth: Optional[np.ndarray] = None,
                        attention: Optional[Mapping[int, LayerAttention]] = None,
                        title: str = '', opacity: float = 0.5, num_latents: int = 4,
                        ignore_index: int = 255) -> Figure:
    """The figure for one image.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        prediction: ``[H, W]`` class indices.
        class_names, palette: per class, from the model's ``dataset_meta``.
        truth: ``[H, W]`` class indices with ``ignore_index`` where unlabelled, or None.
        attention: per layer index, its :class:`LayerAttention` on the tokens that cover the
            image (stretched over it).
        num_latents: how many of the most distinct latents each layer shows.
    """
    attention = attention or {}
    palette = np.asarray(palette, np.uint8)
    # Named from the full-size arrays, drawn from shrunk ones: a panel is a few hundred pixels
    # wide, and matplotlib holds several float copies of every array it draws.
    titles = (input_title(image), prediction_title(prediction, truth, ignore_index))
    handles = class_legend(prediction, truth, class_names, palette, ignore_index)
    image, prediction, truth = shrunk_for_drawing(image, prediction, truth)
    aspect = float(np.clip(image.shape[0] / image.shape[1], *ASPECTS))  # panel height / width
    on_top = 2 if truth is None else 3  # input, prediction, ground truth
    if attention:
        num_latents = min([num_latents] + [len(m.latent_to_tokens) for m in attention.values()])
    columns = 2 + num_latents
    beside = len(handles) <= LEGEND_BESIDE  # else in a row of its own under the images
    legend_rows = 0 if beside else -(-len(handles) // LEGEND_COLUMNS)
    width = max(MIN_WIDTH_INCHES, columns * TILE_INCHES, on_top * TOP_PANEL_INCHES + 2.2)
    heights = ([TOP_PANEL_INCHES * aspect + 0.6] + ([0.25 * legend_rows + 0.4] if legend_rows
                                                      else [])
               + [TILE_INCHES * aspect + 0.7] * len(attention))
    figure = Figure(figsize=(width, sum(heights) + 0.5), dpi=DPI, layout='constrained')
    grid = figure.add_gridspec(len(heights), 1, height_ratios=heights)
    row = grid[0].subgridspec(1, on_top + beside,
                              width_ratios=[TOP_PANEL_INCHES] * on_top + [2.2] * beside)
    draw_images(figure, row, titles, image, prediction, truth, palette, opacity, ignore_index)
    legend_axes = figure.add_subplot(row[on_top] if beside else grid[1])
    legend_axes.axis('off')
    legend_axes.legend(handles=handles, loc='center left' if beside else 'center',
                       frameon=False, fontsize=9, title='classes present', title_fontsize=10,
                       alignment='left', ncols=1 if beside else LEGEND_COLUMNS,
                       handlelength=1.6, handleheight=1.2)
    for index, (layer, maps) in enumerate(attention.items()):
        draw_attention_row(figure, grid[len(heights) - len(attention) + index].subgridspec(
            1, columns), image, layer, maps, num_latents)
    if attention:
        figure.supxlabel(f'latent panels: the {num_latents} most distinct latents '
                         '(farthest-point selection); colour = log2 of the latent\'s attention '
                         'over the mean of all latents (red: looks more, blue: less), stretched '
                         'per latent', fontsize=8, color='0.3')
    if title:
        figure.suptitle(title, fontsize=12)
    return figure


def shrunk_for_drawing(image: np.ndarray, prediction: np.ndarray, truth: Optional[np.ndarray],
                       max_side: int = DRAW_MAX_SIDE) -> tuple:
    """The arrays at most ``max_side`` pixels a side: the image averaged over boxes (PIL), the
    label maps by nearest pixel."""
    height, width = image.shape[:2]
    factor = max(height, width) / max_side
    if factor <= 1:
        return image, prediction, truth
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    shrunk = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    rows = (np.arange(size[1]) + 0.5) * height // size[1]
    columns = (np.arange(size[0]) + 0.5) * width // size[0]
    pick = np.ix_(rows.astype(np.int64), columns.astype(np.int64))
    return shrunk, prediction[pick], None if truth is None else truth[pick]


def input_title(image: np.ndarray) -> str:
    height, width = image.shape[:2]
    stretched = ', shown stretched' if stretched_aspect(image) else ''
    return f'input ({width}x{height}{stretched})'


def draw_images(figure: Figure, row, titles: tuple[str, str], image, prediction, truth, palette,
                opacity: float, ignore_index: int) -> None:
    """Input, prediction and (when given) ground truth, side by side."""
    panels = [(titles[0], image.astype(np.float32) / 255),
              (titles[1], label_overlay(image, prediction, palette, opacity, ignore_index))]
    if truth is not None:
        panels.append(('ground truth', label_overlay(image, truth, palette, opacity,
                                                     ignore_index)))
    for slot, (name, pixels) in enumerate(panels):
        show(figure.add_subplot(row[slot]), pixels, name, TOP_PANEL_INCHES)


def class_legend(prediction, truth, class_names, palette, ignore_index: int) -> list[Patch]:
    """A swatch per class in the prediction or the truth (and one for unlabelled pixels)."""
    shown = [prediction] + ([truth] if truth is not None else [])
    present = sorted(set().union(*(np.flatnonzero(np.bincount(m.ravel())).tolist() for m in shown))
                     - {ignore_index})
    handles = [Patch(facecolor=palette[c % len(palette)] / 255, edgecolor='0.2',
                     label=f'{c} {class_names[c] if c < len(class_names) else "?"}')
               for c in present]
    if truth is not None and (truth == ignore_index).any():
        handles.append(Patch(facecolor=IGNORE_COLOUR, edgecolor='0.2', label='not labelled'))
    return handles


def prediction_title(prediction: np.ndarray, truth: Optional[np.ndarray],
                     ignore_index: int) -> str:
    if truth is None:
        return 'prediction'
    labelled = truth != ignore_index
    if not labelled.any():
        return 'prediction (no labelled pixels)'
    right = (prediction[labelled] == truth[labelled]).mean()
    return f'prediction ({100 * right:.1f}% of labelled pixels right)'


def draw_attention_row(figure: Figure, row, image: np.ndarray, layer: int, maps: LayerAttention,
                       num_latents: int) -> None:
    """Computed on the token grid (small whatever the image), drawn at the image's pixels."""
    size = image.shape[:2]
    colours = distinct_colours(len(maps.latent_to_tokens))
    winner = to_pixels(maps.token_to_latents.argmax(0).numpy(), size)
    axes = show(figure.add_subplot(row[0]), blend(greyed(image), colours[winner], 0.65),
                'token → latent (argmax)', TILE_INCHES)
    axes.set_ylabel(f'layer {layer}', fontsize=12, fontweight='bold')
    mean = to_pixels(stretch(maps.latent_to_tokens.mean(0).numpy()), size)
    show(figure.add_subplot(row[1]), heat(image, mean, 'inferno', 0.75), 'mean over latents',
         TILE_INCHES)
    relative = relative_attention(maps.latent_to_tokens)
    for slot, latent in enumerate(most_distinct(relative, num_latents)):
        values = relative[latent].numpy()
        limit = max(float(np.percentile(np.abs(values), 99)), 1e-6)
        values = to_pixels(np.clip(values / limit, -1, 1), size)
        coloured = heat(image, 0.5 + 0.5 * values, 'RdBu_r', 0.85 * np.abs(values) ** 0.7)
        axes = show(figure.add_subplot(row[2 + slot]), coloured, f'latent {latent}', TILE_INCHES)
        axes.set_xlabel(ratio_range(limit), fontsize=8)
        frame(axes, colours[latent] / 255)  # the latent's colour in the assignment map


def to_pixels(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ``[h, w]`` token map stretched over ``size`` (H, W) pixels, each token a block (nearest,
    as ``F.interpolate``), so the token grid stays visible."""
    rows = np.arange(size[0]) * grid.shape[0] // size[0]
    columns = np.arange(size[1]) * grid.shape[1] // size[1]
    return grid[rows[:, None], columns[None, :]]


def ratio_range(limit: float) -> str:
    """The range a relative map's colours span, in words a reader takes in at a glance."""
    if 2 ** limit < 1.1:
        return f'mean ± {100 * (2 ** limit - 1):.2g}%'
    return f'×{2 ** -limit:.2g} … ×{2 ** limit:.2g} of mean'


def stretch(values: np.ndarray, low: float = 1, high: float = 99) -> np.ndarray:
    """Percentile contrast stretch to 0..1."""
    lo, hi = np.percentile(values, [low, high])
    return np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1)


def heat(image: np.ndarray, values: np.ndarray, cmap: str, opacity) -> np.ndarray:
    """``values`` in 0..1 through ``cmap`` over the greyed image."""
    return blend(greyed(image), colormaps[cmap](values)[..., :3], opacity)


def label_overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, opacity: float,
                  ignore_index: int) -> np.ndarray:
    """Class colours over the image; ``ignore_index`` pixels greyed."""
    ignored = labels == ignore_index
    colours = palette[np.where(ignored, 0, labels) % len(palette)]
    overlay = blend(image, colours, opacity)
    overlay[ignored] = blend(greyed(image), np.array(IGNORE_COLOUR, np.float32), 0.3)[ignored]
    return overlay


def show(axes, pixels: np.ndarray, title: str, panel_inches: float):
    """An image panel without ticks; small images are enlarged pixel by pixel (nearest), large
    ones smoothed while shrinking."""
    upscaled = panel_inches * DPI >= pixels.shape[1]
    axes.imshow(np.clip(pixels, 0, 1), interpolation='nearest' if upscaled else 'antialiased',
                aspect='auto' if stretched_aspect(pixels) else 'equal')
    axes.set_title(title, fontsize=10)
    axes.set_xticks([])
    axes.set_yticks([])
    return axes


def stretched_aspect(pixels: np.ndarray) -> bool:
    return not ASPECTS[0] <= pixels.shape[0] / pixels.shape[1] <= ASPECTS[1]


def frame(axes, colour) -> None:
    for spine in axes.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3)
