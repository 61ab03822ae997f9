"""The report's figures as inline SVG strings, drawn with matplotlib.

Every function takes plain lists (what the report document holds) and returns one ``<svg>`` element ready to
inline in HTML. Three things make that safe and reproducible:

- Figures are bare :class:`matplotlib.figure.Figure` objects, never pyplot's: nothing is registered in a
  global figure manager (so nothing stays open and no backend is switched for the caller), and the SVG
  writer needs no GUI. Each figure is dropped when its function returns.
- Text stays text (``svg.fonttype = "none"``), the hash salt is fixed and the metadata (date, creator) is
  dropped, so the same document gives byte-identical SVG.
- Matplotlib names elements ``figure_1``, ``patch_2``, ... in every figure; several SVGs in one HTML page
  would share those ids (and markers, clip paths), so every id and every reference to one gets a
  per-figure prefix.

Because the same inputs give the same SVG, the per-model figures are remembered by their inputs: a
compression search writes one gate report per candidate, and each of them draws the same parent's
reliability diagram and confusion matrix, which are drawn once.
"""

from __future__ import annotations

import functools
import html
import io
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

# Palette shared with the stylesheet (templates/style.css).
CANDIDATE = "#2563eb"
BASELINE = "#d97706"
PASS = "#15803d"
FAIL = "#b91c1c"
NEUTRAL = "#64748b"
INK = "#1f2937"
MUTED = "#6b7280"
GRID = "#e5e7eb"

_STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "assay-report",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 9,
    "axes.labelcolor": INK,
    "axes.edgecolor": "#9ca3af",
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": GRID,
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "xtick.labelcolor": INK,
    "ytick.labelcolor": INK,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}
_NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)
_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(href="#|url\(#)([^")]+)')
_OPEN = re.compile(r"<svg\b([^>]*)>")


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", key).strip("-") or "fig"


def _inline(svg: str, key: str, title: str) -> str:
    """Standalone SVG document -> one inline ``<svg>`` element with unique ids and an accessible title."""
    svg = _PROLOG.sub("", svg, count=1)
    prefix = _slug(key)
    svg = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    svg = _REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
    caption = f'\n <title id="{prefix}-title">{html.escape(title)}</title>'
    return _OPEN.sub(
        lambda m: f'<svg class="plot" role="img" aria-labelledby="{prefix}-title"{m.group(1)}>{caption}',
        svg,
        count=1,
    )


@contextmanager
def _figure(figsize: tuple[float, float]) -> Iterator[Figure]:
    with mpl.rc_context(_STYLE):
        yield Figure(figsize=figsize, layout="constrained")


def _svg(fig: Figure, key: str, title: str) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata=_NO_METADATA)
    return _inline(buffer.getvalue(), key, title)


def _remembered(draw: Callable[..., str]) -> Callable[..., str]:
    """``draw`` with its last figures remembered by their inputs (plain lists and strings, as the report
    document holds them), which decide the SVG byte for byte."""

    @functools.lru_cache(maxsize=32)
    def by_key(key: str) -> str:
        args, kwargs = json.loads(key)
        return draw(*args, **kwargs)

    @functools.wraps(draw)
    def remembered(*args: Any, **kwargs: Any) -> str:
        try:
            key = json.dumps([args, kwargs], sort_keys=True)
        except TypeError:  # inputs that are not plain JSON (numpy values): drawn, not remembered
            return draw(*args, **kwargs)
        return by_key(key)

    return remembered


def _floats(values: Sequence[Any]) -> np.ndarray:
    """Lists from JSON may hold null for empty bins: they become NaN, which matplotlib leaves out."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _percent_axis(ax: Axes, axis: str = "y") -> None:
    target = ax.yaxis if axis == "y" else ax.xaxis
    # decimals=None picks as many decimals as the axis span needs, so narrow ranges (88-92%) get
    # distinct tick labels instead of "90%, 90%".
    target.set_major_formatter(mpl.ticker.PercentFormatter(xmax=1.0, decimals=None))


@_remembered
def reliability_svg(
    bins: Mapping[str, Sequence[Any]], *, key: str, heading: str, title: str, color: str = CANDIDATE
) -> str:
    """Reliability diagram: accuracy per confidence bin against the diagonal, the gap shaded, counts below.

    ``heading`` is drawn above the axes (short: panels sit side by side); ``title`` names the SVG.
    """
    lower, upper = _floats(bins["bin_lower"]), _floats(bins["bin_upper"])
    confidence, accuracy = _floats(bins["confidence"]), _floats(bins["accuracy"])
    count = np.nan_to_num(_floats(bins["count"]))
    filled = count > 0
    width, mid = upper - lower, (upper + lower) / 2
    with _figure((3.9, 4.3)) as fig:
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        top.plot([0, 1], [0, 1], ls="--", lw=1, color=MUTED, label="perfect calibration")
        top.bar(
            lower[filled],
            accuracy[filled],
            width=width[filled],
            align="edge",
            color=color,
            alpha=0.85,
            edgecolor="white",
            linewidth=0.6,
            label="accuracy in bin",
        )
        # The gap between what the model claims (mean confidence) and what it achieves, per bin.
        gap_low = np.minimum(accuracy, confidence)[filled]
        gap_height = np.abs(confidence - accuracy)[filled]
        top.bar(
            lower[filled],
            gap_height,
            bottom=gap_low,
            width=width[filled],
            align="edge",
            color=FAIL,
            alpha=0.18,
            edgecolor=FAIL,
            linewidth=0.6,
            hatch="///",
            label="gap to confidence",
        )
        top.plot(
            mid[filled], confidence[filled], ls="none", marker="_", ms=8, color=INK, label="mean confidence"
        )
        top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=heading)
        _percent_axis(top)
        top.legend(loc="upper left")
        bottom.bar(
            lower,
            count,
            width=width,
            align="edge",
            color=NEUTRAL,
            alpha=0.7,
            edgecolor="white",
            linewidth=0.6,
        )
        positive = count[filled]
        # Confident models put most examples in the last bin; a log axis keeps the other bins visible.
        if positive.size and positive.max() / positive.min() > 50:
            bottom.set_yscale("log")
            bottom.set_ylabel("examples (log)")
        else:
            bottom.set_ylabel("examples")
        bottom.set(xlim=(0, 1), xlabel="confidence (top-label)")
        _percent_axis(bottom, "x")
        return _svg(fig, key, title)


@_remembered
def confusion_svg(
    matrix: Sequence[Sequence[Any]], class_names: Sequence[str], *, key: str, heading: str, title: str
) -> str:
    """Confusion matrix: counts in the cells, colour by share of the true class (row-normalised)."""
    counts = np.nan_to_num(_floats([v for row in matrix for v in row])).reshape(len(matrix), -1)
    k = counts.shape[0]
    names = [str(c) for c in class_names] if len(class_names) == k else [str(i) for i in range(k)]
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    # Sized so that, two side by side in the page, the cell counts print at about their nominal size.
    side = min(max(3.0, 0.34 * k + 1.5), 9.0)
    with _figure((side + 0.6, side)) as fig:
        ax = fig.subplots()
        ax.grid(False)
        # pcolormesh stays vector in SVG; imshow would embed a raster image.
        mesh = ax.pcolormesh(share, cmap="Blues", vmin=0, vmax=1, edgecolors="white", linewidth=0.5)
        if k <= 30:
            size = 6.5 if k > 12 else 7.5
            for (i, j), c in np.ndenumerate(counts):
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    f"{int(c):,}",
                    ha="center",
                    va="center",
                    fontsize=size,
                    color="white" if share[i, j] > 0.55 else INK,
                )
        ax.set_xticks(np.arange(k) + 0.5, names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(np.arange(k) + 0.5, names)
        ax.tick_params(length=0, labelsize=7.5)
        ax.set(xlim=(0, k), ylim=(k, 0), xlabel="predicted class", ylabel="true class", title=heading)
        for spine in ax.spines.values():
            spine.set_visible(False)
        bar = fig.colorbar(mesh, ax=ax, fraction=0.046, pad=0.03)
        bar.set_label("share of the true class")
        bar.ax.yaxis.set_major_formatter(mpl.ticker.PercentFormatter(xmax=1.0, decimals=0))
        bar.ax.tick_params(labelsize=7.5)
        bar.outline.set_visible(False)
        return _svg(fig, key, title)


@dataclass(frozen=True)
class ForestRow:
    """One paired delta on the forest plot, already in display units (points for rates)."""

    label: str
    delta: float
    ci_low: float
    ci_high: float
    higher_is_better: bool | None
    margin: float | None = None  # a non-inferiority margin, drawn where the CI bound must stay


def _forest_colour(row: ForestRow) -> str:
    if row.higher_is_better is None:
        return NEUTRAL
    worse_side = row.ci_high < 0 if row.higher_is_better else row.ci_low > 0
    better_side = row.ci_low > 0 if row.higher_is_better else row.ci_high < 0
    return FAIL if worse_side else PASS if better_side else CANDIDATE


def forest_svg(rows: Sequence[ForestRow], *, key: str, title: str, xlabel: str) -> str:
    """Deltas with their 95% intervals, one row per metric, zero (no change) marked."""
    with _figure((7.2, 0.42 * len(rows) + 1.3)) as fig:
        ax = fig.subplots()
        ax.axvline(0, color=INK, lw=0.9)
        for y, row in enumerate(rows):
            colour = _forest_colour(row)
            ax.plot([row.ci_low, row.ci_high], [y, y], color=colour, lw=2.2, solid_capstyle="round")
            ax.plot([row.delta], [y], marker="o", ms=6, color=colour, markeredgecolor="white")
            if row.margin is not None:
                edge = -row.margin if row.higher_is_better is not False else row.margin
                ax.plot([edge, edge], [y - 0.32, y + 0.32], color=FAIL, lw=1.2, ls=(0, (2, 1.5)))
        ax.set_yticks(range(len(rows)), [r.label for r in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="y", length=0)
        ax.set(xlabel=xlabel, title=title)
        spread = max([abs(v) for r in rows for v in (r.ci_low, r.ci_high, r.margin or 0.0)] + [1e-9])
        ax.set_xlim(-1.15 * spread, 1.15 * spread)
        return _svg(fig, key, title)


def training_curve_svg(curve: Mapping[str, Sequence[Any]], *, key: str, title: str) -> str:
    """Loss per epoch (train and validation) beside validation accuracy, the best validation epoch marked."""
    n = max((len(v) for k, v in curve.items() if k != "epoch"), default=0)
    epochs = _floats(curve["epoch"]) if "epoch" in curve else np.arange(1, n + 1, dtype=float)
    val_loss = _floats(curve.get("val_loss", []))
    has_accuracy = bool(curve.get("val_accuracy"))
    with _figure((7.2, 2.9)) as fig:
        axes = fig.subplots(1, 2 if has_accuracy else 1, squeeze=False)[0]
        loss_ax = axes[0]
        for name, colour, label in (("train_loss", NEUTRAL, "train"), ("val_loss", CANDIDATE, "validation")):
            values = _floats(curve.get(name, []))
            if values.size:
                loss_ax.plot(
                    epochs[: values.size], values, marker="o", ms=3, lw=1.6, color=colour, label=label
                )
        loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
        loss_ax.legend()
        best = None
        if val_loss.size and not np.all(np.isnan(val_loss)):
            best = epochs[int(np.nanargmin(val_loss))]
            loss_ax.axvline(best, color=MUTED, ls=":", lw=1)
        if has_accuracy:
            acc_ax = axes[1]
            accuracy = _floats(curve["val_accuracy"])
            acc_ax.plot(epochs[: accuracy.size], accuracy, marker="o", ms=3, lw=1.6, color=CANDIDATE)
            acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy")
            _percent_axis(acc_ax)
            if best is not None:
                acc_ax.axvline(best, color=MUTED, ls=":", lw=1, label=f"best val. loss (epoch {best:g})")
                acc_ax.legend(loc="lower right")
        for ax in axes:
            ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        return _svg(fig, key, title)


def per_class_svg(series: Mapping[str, Mapping[str, Sequence[Any]]], *, key: str, title: str) -> str:
    """Per-class recall with intervals; ``series`` maps a model role to ``{class: [lo, value, hi]}``."""
    colours = {"candidate": CANDIDATE, "baseline": BASELINE}
    classes = list(next(iter(series.values())).keys())
    offsets = np.linspace(-0.15, 0.15, len(series)) if len(series) > 1 else [0.0]
    with _figure((7.2, 0.32 * len(classes) + 1.2)) as fig:
        ax = fig.subplots()
        for offset, (role, values) in zip(offsets, series.items(), strict=True):
            colour = colours.get(role, NEUTRAL)
            for y, cls in enumerate(classes):
                lo, value, hi = (_floats(values[cls]) if cls in values else np.full(3, math.nan)).tolist()
                ax.plot([lo, hi], [y + offset, y + offset], color=colour, lw=2, solid_capstyle="round")
                ax.plot(
                    [value],
                    [y + offset],
                    marker="o",
                    ms=4.5,
                    color=colour,
                    markeredgecolor="white",
                    label=role if y == 0 else None,
                )
        ax.set_yticks(range(len(classes)), classes)
        ax.set_ylim(len(classes) - 0.5, -0.5)
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="y", length=0)
        _percent_axis(ax, "x")
        ax.set(xlabel="recall (95% CI)", title=title)
        fig.legend(loc="outside upper right", ncols=len(series))
        return _svg(fig, key, title)


@dataclass(frozen=True)
class ParetoPoint:
    label: str
    cost: float
    accuracy: float
    ci_low: float
    ci_high: float
    status: str  # "root", "passed" or "failed"
    on_front: bool
    url: str | None = None  # the point links to its gate report


_PARETO_COLOURS = {"root": INK, "passed": PASS, "failed": FAIL}


def pareto_svg(points: Sequence[ParetoPoint], *, key: str, title: str, xlabel: str) -> str:
    """Accuracy (95% interval) against a cost; the Pareto frontier joined and labelled, log cost axis."""
    with _figure((5.6, 3.6)) as fig:
        ax = fig.subplots()
        front = sorted((p for p in points if p.on_front), key=lambda p: p.cost)
        if len(front) > 1:
            ax.step([p.cost for p in front], [p.accuracy for p in front], where="post", color=NEUTRAL, lw=1,
                    ls=(0, (3, 2)), label="Pareto frontier")  # fmt: skip
        for p in points:
            colour = _PARETO_COLOURS.get(p.status, NEUTRAL)
            yerr = [[max(p.accuracy - p.ci_low, 0)], [max(p.ci_high - p.accuracy, 0)]]  # float round-off
            bars = ax.errorbar([p.cost], [p.accuracy], yerr=yerr,
                        fmt="D" if p.status == "root" else "o", ms=6 if p.on_front else 4, color=colour,
                        mfc=colour if p.on_front else "white", elinewidth=0.8, capsize=2)  # fmt: skip
            if p.url:
                bars.lines[0].set_url(p.url)  # the SVG writer wraps the marker in a link
            if p.on_front:  # labels for the frontier only: the table names every point
                ax.annotate(p.label, (p.cost, p.accuracy), xytext=(4, 3), textcoords="offset points",
                            fontsize=6.5, color=MUTED)  # fmt: skip
        if points and min(p.cost for p in points) > 0:
            ax.set_xscale("log")
        _percent_axis(ax)
        ax.set(xlabel=xlabel, ylabel="test accuracy", title=title)
        handles = [
            mpl.lines.Line2D([], [], marker=m, ls="", color=c, label=lbl)
            for m, c, lbl in (("D", INK, "parent"), ("o", PASS, "passed the gate"), ("o", FAIL, "failed"))
        ]
        ax.legend(handles=handles, loc="lower right")
        return _svg(fig, key, title)


def robust_accuracy_svg(curves: Mapping[str, Mapping[str, Sequence[Any]]], *, key: str, title: str) -> str:
    """Robust accuracy against eps, one panel per norm, FGSM and PGD (the trust suite's curves)."""
    with _figure((4.0 * max(len(curves), 1), 3.2)) as fig:
        axes = fig.subplots(1, max(len(curves), 1), squeeze=False)[0]
        for ax, (norm, curve) in zip(axes, curves.items(), strict=False):
            for attack, colour in (("fgsm", BASELINE), ("pgd", CANDIDATE)):
                if attack in curve:
                    ax.plot(_floats(curve["eps"]), _floats(curve[attack]), marker="o", color=colour,
                            label=attack.upper())  # fmt: skip
            ax.set(xlabel=f"eps ({norm}, input units)", ylabel="robust accuracy", ylim=(0, 1), title=norm)
            _percent_axis(ax)
            ax.legend()
        return _svg(fig, key, title)


def corruption_svg(corruption: Mapping[str, Any], *, key: str, title: str) -> str:
    """Accuracy against corruption severity, one line per corruption, clean accuracy dashed."""
    with _figure((6.4, 3.6)) as fig:
        ax = fig.subplots()
        severities = _floats(corruption["severities"])
        for name, accuracy in corruption["accuracy"].items():
            ax.plot(severities, _floats(accuracy), marker=".", lw=1.2, label=name)
        ax.axhline(float(corruption["clean"]), color=INK, ls="--", lw=1, label="clean")
        ax.set(xlabel="severity", ylabel="accuracy", ylim=(0, 1), xticks=severities, title=title)
        _percent_axis(ax)
        ax.legend(fontsize=6.5, ncol=2, loc="lower left")
        return _svg(fig, key, title)


def label_curve_svg(points: Sequence[Mapping[str, Any]], *, key: str, title: str) -> str:
    """Test accuracy (95% interval) against labelled texts per class, one line per recipe; "every label"
    sits to the right of the largest budget (log axis of labels per class)."""
    budgets = sorted({int(p["labels_per_class"]) for p in points if p["labels_per_class"] is not None})
    everything = 2.0 * budgets[-1] if budgets else 1.0  # where "all" is drawn
    recipes = list(dict.fromkeys(str(p["recipe"]) for p in points))
    colours = [CANDIDATE, BASELINE, PASS, INK, FAIL, NEUTRAL]
    with _figure((5.6, 3.4)) as fig:
        ax = fig.subplots()
        for i, recipe in enumerate(recipes):
            mine = sorted(
                (p for p in points if p["recipe"] == recipe),
                key=lambda p: everything if p["labels_per_class"] is None else float(p["labels_per_class"]),
            )
            x = [everything if p["labels_per_class"] is None else float(p["labels_per_class"]) for p in mine]
            y = [float(p["accuracy"]) for p in mine]
            yerr = [[max(a - float(p["ci_low"]), 0) for a, p in zip(y, mine, strict=True)],
                    [max(float(p["ci_high"]) - a, 0) for a, p in zip(y, mine, strict=True)]]  # fmt: skip
            ax.errorbar(x, y, yerr=yerr, marker="o", ms=4, lw=1.4, capsize=2, elinewidth=0.8,
                        color=colours[i % len(colours)], label=recipe)  # fmt: skip
        ax.set_xscale("log")
        ticks = [*budgets, everything]
        ax.set_xticks(ticks, [*(str(b) for b in budgets), "all"])
        ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())
        _percent_axis(ax)
        ax.set(xlabel="labelled texts per class", ylabel="test accuracy", title=title)
        ax.legend(loc="lower right")
        return _svg(fig, key, title)
