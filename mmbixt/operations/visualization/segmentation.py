"""One figure per segmented image: the input, the prediction and the ground truth (when given) with
a legend of the classes present, then for each recorded layer the latent assignment map, the mean
attention and the most distinct latents."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
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
ASSIGNMENT_TITLE = 'latent each token reads most\n(latent ids, not classes)'
MEAN_TITLE = 'mean over latents'
LATENT_PANELS_NOTE = (
    'Latent panels: the {count} most distinct latents (farthest-point selection). Red: the latent '
    'attends there more than the mean of all latents, blue: less; the colour bar gives the ratio '
    "(log scale, stretched per latent). A panel's frame has the latent's colour in the first "
    'column.')


def segmentation_figure(image: np.ndarray, prediction: np.ndarray,
                        class_names: Sequence[str], palette: Sequence[Sequence[int]],
                        truth: Optional[np.ndarray] = None,
                        attention: Optional[Mapping[int, LayerAttention]] = None,
                        title: str = '', opacity: float = 0.5, num_latents: int = 4,
                        ignore_index: int = 255, num_layers: Optional[int] = None) -> Figure:
    """The figure for one image.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        prediction: ``[H, W]`` class indices.
        class_names, palette: per class, from the model's ``dataset_meta``.
        truth: ``[H, W]`` class indices with ``ignore_index`` where unlabelled, or None.
        attention: per layer index, its :class:`LayerAttention` on the tokens that cover the
            image (stretched over it).
        num_latents: how many of the most distinct latents each layer shows.
        num_layers: the backbone's depth, to label the rows first / middle / last.
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
               + [TILE_INCHES * aspect + 1.2] * len(attention))
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
            1, columns), image, layer_label(layer, num_layers), maps, num_latents)
    if attention:
        figure.supxlabel(LATENT_PANELS_NOTE.format(count=num_latents), fontsize=9, color='0.15',
                         wrap=True)
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


def layer_label(layer: int, num_layers: Optional[int]) -> str:
    """``layer 5 (middle)``: where the row's layer sits in the backbone."""
    if num_layers is None:
        return f'layer {layer}'
    place = {0: 'first', num_layers // 2: 'middle', num_layers - 1: 'last'}.get(
        layer, f'of 0..{num_layers - 1}')
    return f'layer {layer}\n({place})'


def draw_attention_row(figure: Figure, row, image: np.ndarray, label: str, maps: LayerAttention,
                       num_latents: int) -> None:
    """Computed on the token grid (small whatever the image), drawn at the image's pixels."""
    colours = distinct_colours(len(maps.latent_to_tokens))
    axes = draw_assignment(figure.add_subplot(row[0]), image, maps, colours)
    axes.set_ylabel(label, fontsize=12, fontweight='bold')
    draw_mean(figure, figure.add_subplot(row[1]), image, maps)
    relative = relative_attention(maps.latent_to_tokens)
    for slot, latent in enumerate(most_distinct(relative, num_latents)):
        draw_latent(figure, figure.add_subplot(row[2 + slot]), image, relative[latent].numpy(),
                    latent, colours[latent] / 255)


def draw_assignment(axes, image: np.ndarray, maps: LayerAttention, colours: np.ndarray):
    """Which latent each token reads most: pale latent colours with the latent's id written on
    its region and dark borders between regions, so it does not read as a class map."""
    winner_grid = maps.token_to_latents.argmax(0).numpy()
    winner = to_pixels(winner_grid, image.shape[:2])
    pale = blend(colours[winner], np.ones(3, np.float32), 0.35)
    pixels = blend(greyed(image), pale, 0.6)
    pixels[region_borders(winner)] = 0.1
    show(axes, pixels, ASSIGNMENT_TITLE, TILE_INCHES)
    axes.set_xlabel('numbers: latent ids\nlines: borders between them', fontsize=7)
    scale = np.array(image.shape[:2]) / np.array(winner_grid.shape)
    for latent, (row, column) in region_labels(winner_grid).items():
        axes.text((column + 0.5) * scale[1] - 0.5, (row + 0.5) * scale[0] - 0.5, str(latent),
                  ha='center', va='center', fontsize=7, fontweight='bold', color='black',
                  bbox=dict(boxstyle='round,pad=0.1', facecolor='white', alpha=0.7, lw=0))
    return axes


def region_borders(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label."""
    border = np.zeros(labels.shape, bool)
    border[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    border[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return border


def region_labels(grid: np.ndarray, max_labels: int = 12) -> dict[int, tuple[int, int]]:
    """Per latent that wins tokens (the largest ``max_labels``), its token nearest the mean
    position of its tokens: where its id is written."""
    latents, counts = np.unique(grid, return_counts=True)
    places = {}
    for latent in latents[np.argsort(-counts)][:max_labels]:
        cells = np.argwhere(grid == latent)
        places[int(latent)] = tuple(cells[np.argmin(((cells - cells.mean(0)) ** 2).sum(1))])
    return places


def draw_mean(figure: Figure, axes, image: np.ndarray, maps: LayerAttention) -> None:
    """The latents' mean attention per token, with a colour bar in multiples of an even spread."""
    mean = maps.latent_to_tokens.mean(0).numpy() * maps.latent_to_tokens[0].numel()
    low, high = np.percentile(mean, [1, 99])
    shown = np.clip((mean - low) / max(high - low, 1e-12), 0, 1)
    show(axes, heat(image, to_pixels(shown, image.shape[:2]), 'inferno', 0.75), MEAN_TITLE,
         TILE_INCHES)
    bar = figure.colorbar(ScalarMappable(Normalize(low, high), 'inferno'), ax=axes,
                          location='bottom', fraction=0.07, pad=0.02, ticks=[low, high])
    bar.ax.set_xticklabels([f'×{low:.2g}', f'×{high:.2g}'], fontsize=7)
    bar.set_label('attention per token, × an even spread', fontsize=7)


def draw_latent(figure: Figure, axes, image: np.ndarray, relative: np.ndarray, latent: int,
                colour: np.ndarray) -> None:
    """One latent's attention relative to the mean of all latents (log2; red more, blue less),
    with a colour bar of the ratio."""
    limit = max(float(np.percentile(np.abs(relative), 99)), 1e-6)
    values = to_pixels(np.clip(relative / limit, -1, 1), image.shape[:2])
    coloured = heat(image, 0.5 + 0.5 * values, 'RdBu_r', 0.85 * np.abs(values) ** 0.7)
    show(axes, coloured, f'latent {latent}', TILE_INCHES)
    frame(axes, colour)  # the latent's colour in the assignment map
    bar = figure.colorbar(ScalarMappable(Normalize(-limit, limit), 'RdBu_r'), ax=axes,
                          location='bottom', fraction=0.07, pad=0.02, ticks=[-limit, 0, limit])
    bar.ax.set_xticklabels([ratio_text(-limit), 'mean', ratio_text(limit)], fontsize=7)
    bar.set_label('blue: less · vs all latents · red: more', fontsize=7)


def to_pixels(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ``[h, w]`` token map stretched over ``size`` (H, W) pixels, each token a block (nearest,
    as ``F.interpolate``), so the token grid stays visible."""
    rows = np.arange(size[0]) * grid.shape[0] // size[0]
    columns = np.arange(size[1]) * grid.shape[1] // size[1]
    return grid[rows[:, None], columns[None, :]]


def ratio_text(log2_ratio: float) -> str:
    """A ratio given as log2, as ``×0.45`` (two decimals near 1, where they matter)."""
    ratio = 2 ** log2_ratio
    return f'×{ratio:.2f}' if 0.9 < ratio < 1.1 else f'×{ratio:.2g}'


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
