"""Report plots: each function takes plain data and returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly, so no GUI backend, no pyplot
global state and no ``plt.close`` bookkeeping are involved; ``save_figure`` writes the PNG.
Rows are records as written to ``metrics.jsonl`` (``{"epoch": 3, "train/loss": 0.41, ...}``);
a row lacking a key is skipped for that key.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 110
PANEL = (5.2, 3.4)  # inches per subplot
MAX_ANNOTATED_CLASSES = 30
MARKER_LIMIT = 40  # draw markers on lines with at most this many points

Row = Mapping[str, object]


# --------------------------------------------------------------------------- helpers


def _figure(n_panels: int = 1, ncols: int | None = None, panel: tuple[float, float] = PANEL):
    """A constrained-layout figure with ``n_panels`` axes on a grid; unused cells are hidden.

    Returns (fig, axes) with axes a flat list of length ``n_panels``.
    """
    n = max(n_panels, 1)
    ncols = ncols or (n if n <= 3 else math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in grid[n:]:
        ax.set_visible(False)
    return fig, list(grid[:n])


def _style(ax: Axes, title: str = "", xlabel: str = "", ylabel: str = "") -> None:
    ax.set_title(title, fontsize=11, fontweight="bold")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def is_number(v: object) -> bool:
    """Python or NumPy int/float, not bool (``numbers.Real`` includes NumPy's scalar types)."""
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _series(rows: Sequence[Row], key: str, x: str) -> tuple[list[float], list[float]]:
    """(xs, ys) over the rows holding numeric values for both ``x`` and ``key``."""
    pairs = [(r[x], r[key]) for r in rows if is_number(r.get(x)) and is_number(r.get(key))]
    return [float(a) for a, _ in pairs], [float(b) for _, b in pairs]


def _line(ax: Axes, xs: Sequence[float], ys: Sequence[float], label: str) -> None:
    marker = "o" if len(xs) <= MARKER_LIMIT else None
    ax.plot(xs, ys, marker=marker, markersize=3.5, linewidth=1.8, label=label)


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")


def _plot_lines(ax: Axes, series: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> None:
    """One line per ``{label: (xs, ys)}`` entry with points; 'no data' when none has any."""
    drawn = {label: xy for label, xy in series.items() if len(xy[0])}
    for label, (xs, ys) in drawn.items():
        _line(ax, xs, ys, label)
    if not drawn:
        _no_data(ax)


def _plot_keyed(ax: Axes, named_rows: Mapping[str, tuple[Sequence[Row], str]], x: str) -> None:
    """One line per label from ``{label: (rows, key)}``, plotting ``key`` against ``x``."""
    _plot_lines(ax, {label: _series(rows, key, x) for label, (rows, key) in named_rows.items()})
    if x == "epoch" or x.endswith("step"):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _shared_legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for the whole figure, to the right, from the labels of all axes."""
    handles: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", frameon=False)


def _side_legend(ax: Axes) -> None:
    """Legend to the right of the axes, where it cannot hide data."""
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _pretty(key: str) -> str:
    """'val/macro_f1' -> 'val macro f1', for titles built from metric keys."""
    return key.replace("/", " ").replace("_", " ")


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


# --------------------------------------------------------------------------- curves


def plot_curves(
    rows: Sequence[Row], keys: Sequence[str], x: str = "epoch", title: str = "", ylabel: str = ""
) -> Figure:
    """Each of ``keys`` against ``x`` on one axes (e.g. ``["train/loss", "val/loss"]``)."""
    fig, (ax,) = _figure()
    _plot_keyed(ax, {k: (rows, k) for k in keys}, x)
    _style(ax, title, x, ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, loc="best")
    return fig


def plot_metric_grid(
    rows: Sequence[Row],
    metrics: Sequence[str],
    splits: Sequence[str] = ("train", "val"),
    x: str = "epoch",
) -> Figure:
    """One subplot per metric, one line per split, reading keys ``f"{split}/{metric}"``."""
    fig, axes = _figure(len(metrics))
    for ax, metric in zip(axes, metrics, strict=True):
        _plot_keyed(ax, {s: (rows, f"{s}/{metric}") for s in splits}, x)
        _style(ax, _pretty(metric), x, "")
    _shared_legend(fig, axes)
    return fig


def plot_overlaid(runs: Mapping[str, Sequence[Row]], key: str, x: str = "epoch", title: str = "") -> Figure:
    """``key`` against ``x`` with one line per run label (e.g. one per sweep point)."""
    return plot_overlaid_grid(runs, [key], x, titles=[title or _pretty(key)])


def plot_overlaid_grid(
    runs: Mapping[str, Sequence[Row]],
    keys: Sequence[str],
    x: str = "epoch",
    titles: Sequence[str] | None = None,
) -> Figure:
    """One subplot per key, each with one line per run; a single legend names the runs."""
    fig, axes = _figure(len(keys))
    for ax, key, title in zip(axes, keys, titles or [_pretty(k) for k in keys], strict=True):
        _plot_keyed(ax, {label: (rows, key) for label, rows in runs.items()}, x)
        _style(ax, title, x, "")
    _shared_legend(fig, axes)
    return fig


def plot_lines_per_group(
    groups: Mapping[str, Sequence[float]], title: str = "", xlabel: str = "", ylabel: str = ""
) -> Figure:
    """One marker line per group over the index of its values (e.g. BIN's rho per layer)."""
    fig, (ax,) = _figure(panel=(6.4, 3.6))
    _plot_lines(ax, {g: (list(range(len(v))), [float(y) for y in v]) for g, v in groups.items()})
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _style(ax, title, xlabel or "index", ylabel)
    if len(groups) > 1:
        _side_legend(ax)
    return fig


# --------------------------------------------------------------------------- matrices, bars


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], normalize: bool = True) -> Figure:
    """Heat map of a (K, K) confusion matrix, rows true and columns predicted.

    With ``normalize`` each row is divided by its count (per-class recall on the diagonal;
    an empty row stays 0). Cells are annotated when K <= 30.
    """
    cm = np.asarray(cm, dtype=np.float64)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {k} class names")
    if normalize:
        totals = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    side = min(max(4.5, 0.42 * k + 2.5), 18.0)
    fig, (ax,) = _figure(panel=(side + 1.0, side))
    vmax = 1.0 if normalize else max(cm.max(), 1.0)
    image = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "count")
    _set_xticks(ax, np.arange(k), class_names)
    ax.set_yticks(np.arange(k), labels=list(class_names))
    ax.tick_params(labelsize=max(6, min(10, 160 // max(k, 1))))
    if k <= MAX_ANNOTATED_CLASSES:
        _annotate_cells(ax, cm, vmax, "{:.2f}" if normalize else "{:.0f}")
    _style(ax, "Confusion matrix" + (" (row-normalized)" if normalize else ""), "Predicted", "True")
    ax.grid(False)
    ax.spines[:].set_visible(False)
    return fig


def _annotate_cells(ax: Axes, values: np.ndarray, vmax: float, fmt: str) -> None:
    size = max(5, min(10, 110 // max(values.shape[0], 1)))
    for (i, j), v in np.ndenumerate(values):
        if v == 0:
            continue  # blank zeros keep large matrices readable
        color = "white" if v > 0.55 * vmax else "0.15"
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=size, color=color)


def _set_xticks(ax: Axes, positions: Sequence[float], labels: Sequence[str]) -> None:
    """Tick labels at ``positions``, slanted when there are many or long ones."""
    slant = len(labels) > 6 or max((len(str(s)) for s in labels), default=0) > 8
    ax.set_xticks(
        positions,
        labels=[str(s) for s in labels],
        rotation=35 if slant else 0,
        ha="right" if slant else "center",
        rotation_mode="anchor" if slant else "default",
    )


def _bar_axes(n_bars: int, title: str, ylabel: str) -> tuple[Figure, Axes]:
    """A single axes, wider with more bars, with a horizontal grid only."""
    fig, (ax,) = _figure(panel=(min(max(5.0, 0.45 * n_bars + 2.5), 16.0), 3.8))
    _style(ax, title, "", ylabel)
    ax.grid(False, axis="x")
    ax.set_axisbelow(True)
    ax.margins(y=0.12)  # head room for the value labels
    return fig, ax


def _labelled_bars(ax: Axes, x: np.ndarray, heights: Sequence[float], fontsize: int, **kwargs):
    """Bars with their value written on top (nothing for a NaN height)."""
    bars = ax.bar(x, heights, **kwargs)
    ax.bar_label(bars, labels=["" if math.isnan(h) else _fmt(h) for h in heights], padding=2, fontsize=fontsize)


def plot_bars(values: Mapping[str, float], title: str = "", ylabel: str = "") -> Figure:
    """One annotated bar per label (e.g. seconds per epoch for each normalization)."""
    labels = list(values)
    fig, ax = _bar_axes(len(labels), title, ylabel)
    x = np.arange(len(labels))
    _labelled_bars(ax, x, [float(values[k]) for k in labels], 9, width=0.65, color="C0")
    _set_xticks(ax, x, labels)
    return fig


def plot_grouped_bars(table: Mapping[str, Mapping[str, float]], title: str = "", ylabel: str = "") -> Figure:
    """Bars grouped by outer key, one colour per inner key (e.g. run -> split -> accuracy).

    A series missing from a group leaves a gap.
    """
    groups = list(table)
    series = list(dict.fromkeys(s for g in groups for s in table[g]))
    fig, ax = _bar_axes(len(groups) * (len(series) + 1) // 2, title, ylabel)
    width = 0.8 / max(len(series), 1)
    centers = np.arange(len(groups))
    fontsize = 8 if len(groups) * len(series) <= 24 else 6
    for i, s in enumerate(series):
        heights = [float(table[g].get(s, math.nan)) for g in groups]
        offsets = centers + (i - (len(series) - 1) / 2) * width
        _labelled_bars(ax, offsets, heights, fontsize, width=width * 0.95, label=s, color=f"C{i % 10}")
    _set_xticks(ax, centers, groups)
    if series:
        _side_legend(ax)
    return fig


# --------------------------------------------------------------------------- images


def _as_display_images(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3 | 1) or (N, H, W) floats in [0, 1] or uint8 -> float array in [0, 1]."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise ValueError(f"expected (N, H, W, 3) or (N, H, W) images, got shape {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float64) / 255.0
    return np.clip(images.astype(np.float64), 0.0, 1.0)


def image_grid(images: np.ndarray, titles: Sequence[str] | None = None, ncols: int = 8) -> Figure:
    """Images on a grid with ``ncols`` columns, axes hidden, optional title above each.

    Args:
        images: (N, H, W, 3) floats in [0, 1] (clipped) or uint8; (N, H, W) is shown in grey.
        titles: N short captions, or None.
        ncols: images per row (fewer when N is smaller).
    """
    images = _as_display_images(images)
    n = len(images)
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images")
    ncols = max(1, min(ncols, n))
    cell = 1.5 if titles is None else 1.7
    fig, axes = _figure(n, ncols=ncols, panel=(1.5, cell))
    for i, ax in enumerate(axes[:n]):
        ax.set_axis_off()
        ax.imshow(images[i], cmap="gray" if images.ndim == 3 else None, vmin=0.0, vmax=1.0)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    return fig


def image_strips(
    strips: Sequence[Sequence[np.ndarray] | None],
    labels: Sequence[Sequence[str]],
    titles: Sequence[str] | None = None,
    ncols: int = 1,
) -> Figure:
    """Rows of images side by side (e.g. an image, its heat map, its overlay), one axes per strip.

    Args:
        strips: each a list of (H, W, 3) images in [0, 1] of one height; None leaves a cell empty.
        labels: per strip, one caption under each of its images.
        titles: one title above each strip, or None.
        ncols: strips per row of the figure.
    """
    n = len(strips)
    width = max((len(s) for s in strips if s is not None), default=1)
    fig, axes = _figure(n, ncols=max(1, min(ncols, n)), panel=(1.45 * width, 1.95 if titles else 1.75))
    for i, (ax, strip) in enumerate(zip(axes, strips)):
        ax.set_axis_off() if strip is None else _draw_strip(ax, strip, labels[i])
        if strip is not None and titles is not None:
            ax.set_title(titles[i], fontsize=8)
    return fig


def _draw_strip(ax: Axes, strip: Sequence[np.ndarray], labels: Sequence[str]) -> None:
    """The images of one strip with a 2-pixel white gap, and a caption under each."""
    images = [_as_display_images(np.asarray(im)[None])[0] for im in strip]  # each (H, W, 3)
    gap = np.ones((images[0].shape[0], 2, 3))
    ax.imshow(np.concatenate([part for im in images for part in (im, gap)][:-1], axis=1), vmin=0.0, vmax=1.0)
    centres = [i * (images[0].shape[1] + 2) + images[0].shape[1] / 2 - 0.5 for i in range(len(images))]
    ax.set_xticks(centres, labels=list(labels), fontsize=7)
    ax.set_yticks([])
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)


def image_mosaic(images: np.ndarray, ncols: int | None = None, title: str = "", cell: float = 0.55,
                 pad: int = 1) -> Figure:
    """Grey images tiled into one picture on a single axes (cheap for hundreds of images).

    Args:
        images: (R, C, H, W) rows of images, or (N, H, W) laid out ``ncols`` per row; floats
            in [0, 1] (clipped) or uint8.
        ncols: images per row for (N, H, W) input (default: about square).
        title: title above the mosaic.
        cell: inches per image (the whole figure is kept at most 13 inches wide).
        pad: white gutter between images, in pixels.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        n = len(images)
        ncols = max(1, min(ncols or math.ceil(math.sqrt(n)), n))
        rows = math.ceil(n / ncols)
        blank = np.full((rows * ncols - n, *images.shape[1:]), 255 if images.dtype == np.uint8 else 1, images.dtype)
        images = np.concatenate([images, blank]).reshape(rows, ncols, *images.shape[1:])
    if images.ndim != 4:
        raise ValueError(f"expected (R, C, H, W) or (N, H, W) images, got shape {images.shape}")
    r, c, h, w = images.shape
    tiles = _as_display_images(images.reshape(r * c, h, w)).reshape(r, c, h, w)
    canvas = np.ones((r * (h + pad) - pad, c * (w + pad) - pad))
    for i, j in np.ndindex(r, c):
        canvas[i * (h + pad): i * (h + pad) + h, j * (w + pad): j * (w + pad) + w] = tiles[i, j]
    scale = min(1.0, 13.0 / (c * cell))
    fig = Figure(figsize=(c * cell * scale, r * cell * scale + (0.35 if title else 0.0)), layout="constrained")
    ax = fig.subplots()
    ax.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=11, fontweight="bold")
    return fig


def plot_embedding(points: np.ndarray, labels: Sequence[int], class_names: Sequence[str], title: str = "",
                   xlabel: str = "", ylabel: str = "") -> Figure:
    """(N, 2) points (a latent map, a t-SNE) scattered with one colour per class."""
    points, labels = np.asarray(points, dtype=np.float64), np.asarray(labels)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(labels):
        raise ValueError(f"expected (N, 2) points and N labels, got {points.shape} and {labels.shape}")
    fig, (ax,) = _figure(panel=(6.4, 5.2))
    colors = colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    for k, name in enumerate(class_names):
        sel = labels == k
        if sel.any():
            ax.scatter(points[sel, 0], points[sel, 1], s=9, alpha=0.75, color=colors(k % colors.N), label=str(name))
    _style(ax, title, xlabel, ylabel)
    _side_legend(ax)
    return fig


# --------------------------------------------------------------------------- output


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``DPI`` (creating parent folders) and release it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", facecolor="white")
    if fig.canvas.manager is not None:  # a pyplot figure: drop it from pyplot's registry
        from matplotlib import pyplot

        pyplot.close(fig)
    return path
