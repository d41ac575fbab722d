"""Figures of the heart evaluation (the S2MNet paper's Fig. 3 and an EF agreement plot).

* :func:`ef_bland_altman_figure`: Bland-Altman plot of predicted against true EF, one panel per
  method (mean of the pair on x, prediction minus truth on y, bias and 95% limits of agreement).
* :func:`iou_box_figure`: box-and-whisker plot of per-case IoU per method.
* :func:`evaluation_figures`: both, from the per-case rows of an evaluation
  (:func:`sono3d.heart.evaluate.evaluate_split`), as ``sono3d heart evaluate`` writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sono3d.metrics.stats import bland_altman
from sono3d.types import PHASES
from sono3d.viz.figures import pyplot, save_png

__all__ = ["ef_bland_altman_figure", "iou_box_figure", "evaluation_figures", "EF_FIGURE", "IOU_FIGURE"]

EF_FIGURE = "ef_bland_altman.png"
IOU_FIGURE = "iou_box.png"


def ef_bland_altman_figure(pred_by_method: dict[str, Any], truth: Any, path: str | Path) -> Path:
    """Bland-Altman panels of EF (percent) per method against the truth; returns the PNG path."""
    plt = pyplot()
    n = max(1, len(pred_by_method))
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.0), squeeze=False)
    for ax, (name, pred) in zip(axes[0], pred_by_method.items(), strict=False):
        ba = bland_altman(pred, truth)
        ax.scatter(ba.mean, ba.diff, s=14, alpha=0.75)
        ax.axhline(ba.bias, color="k", lw=1, label=f"bias {ba.bias:+.1f}")
        for v in ba.loa:
            ax.axhline(v, color="k", lw=0.8, ls="--")
        ax.set_title(f"{name}: LoA {ba.loa[0]:+.1f} to {ba.loa[1]:+.1f}")
        ax.set_xlabel("mean of predicted and true EF (%)")
        ax.set_ylabel("predicted - true EF (%)")
        ax.legend(loc="upper right", fontsize=8)
    return save_png(fig, path, dpi=120, bbox_inches="tight")


def iou_box_figure(iou_by_method: dict[str, Any], path: str | Path, resolution: int = 128) -> Path:
    """Box-and-whisker plot of per-case IoU per method; returns the PNG path."""
    plt = pyplot()
    names = list(iou_by_method)
    data = [np.asarray(iou_by_method[k], dtype=float) for k in names]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(names), 4.0))
    box = ax.boxplot(data, patch_artist=True, widths=0.55)
    ax.set_xticks(range(1, len(names) + 1), names)
    colours = ["#d04040", "#4070c0", "#50a060", "#a060b0"]
    for patch, c in zip(box["boxes"], colours, strict=False):
        patch.set_facecolor(c)
        patch.set_alpha(0.6)
    ax.set_ylabel(f"IoU at {resolution}³")
    ax.set_ylim(min(0.5, min((float(d.min()) for d in data if d.size), default=0.5) - 0.02), 1.0)
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path, dpi=120, bbox_inches="tight")


def evaluation_figures(rows: list[dict[str, Any]], out_dir: str | Path, resolution: int = 128) -> list[Path]:
    """The EF Bland-Altman plot and the IoU box plot of an evaluation's per-case rows.

    ``rows`` are the evaluation's ``cases.csv`` rows (``ef_true``, ``ef_s2mnet``, ``iou_ed``,
    ``iou_es`` and, with a voxel baseline, ``ef_baseline``, ``baseline_iou_ed``, ``baseline_iou_es``).
    The baseline's EF panel is drawn only when every case has one. Writes nothing for fewer than two
    cases (a Bland-Altman plot needs two pairs). Returns the paths written.
    """
    if len(rows) < 2:
        return []
    out = Path(out_dir)
    ef_pairs = {"S2MNet": [r["ef_s2mnet"] for r in rows]}
    if all(np.isfinite([r.get("ef_baseline", np.nan) for r in rows])):
        ef_pairs["Voxel baseline"] = [r["ef_baseline"] for r in rows]
    ious = {"S2MNet": [r[f"iou_{ph}"] for r in rows for ph in PHASES]}
    if f"baseline_iou_{PHASES[0]}" in rows[0]:
        ious["Voxel baseline"] = [r[f"baseline_iou_{ph}"] for r in rows for ph in PHASES]
    return [ef_bland_altman_figure(ef_pairs, [r["ef_true"] for r in rows], out / EF_FIGURE),
            iou_box_figure(ious, out / IOU_FIGURE, resolution=resolution)]
