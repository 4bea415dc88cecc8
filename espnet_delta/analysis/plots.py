"""The analysis figures, drawn with matplotlib's object API on the Agg canvas.

``matplotlib.figure.Figure`` is used directly (no ``pyplot``): no global figure
state, no display backend, safe on headless machines and in tests.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

MEASURE_TITLES = {"mean_cca": "mean CCA", "pwcca": "PWCCA"}


def layerwise_figure(
    curves: Dict[str, Dict[str, List[Tuple[int, float]]]], title: str, measures: Sequence[str] = ("mean_cca", "pwcca")
) -> Figure:
    """One panel per measure; x: hidden-state index, y: similarity, one line per model.

    ``curves[measure][model]`` = ``[(layer, value), ...]``; NaN values (undefined
    similarity) leave a gap in the line.
    """
    fig = Figure(figsize=(5.0 * len(measures), 3.8))
    axes = fig.subplots(1, len(measures), squeeze=False)[0]
    for ax, measure in zip(axes, measures):
        for model, points in sorted(curves.get(measure, {}).items()):
            layers = [p[0] for p in points]
            values = [p[1] for p in points]
            ax.plot(layers, values, marker="o", label=model)
        ax.set_title(MEASURE_TITLES.get(measure, measure))
        ax.set_xlabel("layer (hidden state)")
        ax.set_ylabel("similarity")
        ax.set_ylim(0.0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if curves.get(measure):
            ax.legend(loc="lower left", fontsize="small")
    fig.suptitle(title)
    return fig


def gate_histogram_figure(means: np.ndarray, labels: Sequence[str], title: str, bins: int = 20) -> Figure:
    """Histogram of per-utterance mean gate weights ``means [n_utts, n_experts]``, one colour per expert."""
    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.subplots()
    edges = np.linspace(0.0, 1.0, bins + 1)
    for k, label in enumerate(labels):
        ax.hist(means[:, k], bins=edges, alpha=0.55, label=f"{label} (mean {means[:, k].mean():.2f})")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("mean gate weight over an utterance's frames")
    ax.set_ylabel("utterances")
    ax.legend(fontsize="small")
    ax.set_title(title)
    return fig


def wer_bar_figure(rows: Sequence[Tuple[str, float, float, float]], title: str, confidence: float) -> Figure:
    """Horizontal bars ``(system, wer, low, high)`` with the interval as error bars."""
    height = max(2.5, 0.35 * len(rows) + 1.2)
    fig = Figure(figsize=(7.0, height))
    ax = fig.subplots()
    names = [r[0] for r in rows]
    wers = np.array([r[1] for r in rows])
    err = np.array([[r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]])
    y = np.arange(len(rows))
    ax.barh(y, wers, xerr=np.clip(err, 0.0, None), capsize=3, color="tab:blue", alpha=0.75)
    for yi, (_, w, _, hi) in zip(y, rows):
        ax.text(max(w, hi), yi, f" {w:.1f}", va="center", ha="left", fontsize="small")
    ax.set_yticks(y, names, fontsize="small")
    ax.invert_yaxis()
    top = max([r[3] for r in rows] + [1.0])
    ax.set_xlim(0.0, top * 1.15 if math.isfinite(top) else None)
    ax.set_xlabel(f"WER (%) with {100 * confidence:.0f} % paired-bootstrap interval")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(title)
    return fig
