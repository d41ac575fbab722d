"""The intake figure: each recorded echo with the fan found in it, beside the views made from it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from sono3d.viz.figures import pyplot, save_png

__all__ = ["IntakePanel", "intake_figure"]


@dataclass
class IntakePanel:
    """One row of the figure.

    Attributes
    ----------
    title : str
        Row title (view name, file, what was found).
    source : ndarray [H, W]
        The recorded frame, grey in [0, 1].
    outline : ndarray [K, 2]
        The fan's outline, ``(col, row)`` points in ``source`` pixels.
    views : ndarray [P, S, S]
        The resampled views (ED, ES or the still).
    labels : list of str
        A caption per view (``ED frame 12``).
    areas : ndarray [N] or None
        Cavity area per frame of a loop (mm^2), drawn as a curve with ED and ES marked.
    marks : (int, int) or None
        ED and ES frame indices on that curve.
    """

    title: str
    source: np.ndarray
    outline: np.ndarray
    views: np.ndarray
    labels: list[str]
    areas: np.ndarray | None = None
    marks: tuple[int, int] | None = None


def intake_figure(panels: list[IntakePanel], path: str | os.PathLike[str], dpi: int = 80) -> None:
    """Write the figure as a PNG (atomically): one row per panel."""
    plt = pyplot()
    n_views = max(len(p.views) for p in panels)
    has_curve = any(p.areas is not None for p in panels)
    cols = 1 + n_views + int(has_curve)
    ratios = [1.5] + [1.0] * (cols - 1)  # room for the source's two-line title
    fig, axes = plt.subplots(len(panels), cols, figsize=(3.0 * sum(ratios) + 0.5, 3.0 * len(panels)), squeeze=False,
                             gridspec_kw={"width_ratios": ratios})
    for row, p in zip(axes, panels):
        ax = row[0]
        ax.imshow(p.source, cmap="gray", vmin=0, vmax=1)
        ax.plot(p.outline[:, 0], p.outline[:, 1], color="#ff3030", lw=1.2)
        ax.set_xlim(-0.5, p.source.shape[1] - 0.5)
        ax.set_ylim(p.source.shape[0] - 0.5, -0.5)
        ax.set_title(p.title, fontsize=8, loc="left")
        for k in range(n_views):
            a = row[1 + k]
            if k < len(p.views):
                a.imshow(p.views[k], cmap="gray", vmin=0, vmax=1)
                a.set_title(p.labels[k], fontsize=8)
            a.set_axis_off()
        if has_curve:
            a = row[-1]
            if p.areas is not None:
                a.plot(np.asarray(p.areas) / 100.0, color="k", lw=1)
                if p.marks is not None:
                    for f, c, name in zip(p.marks, ("#d62728", "#1f77b4"), ("ED", "ES")):
                        a.plot([f], [p.areas[f] / 100.0], "o", color=c, label=f"{name} {f}")
                    a.legend(fontsize=7)
                a.set_xlabel("frame", fontsize=8)
                a.set_ylabel("cavity area (cm²)", fontsize=8)
                a.tick_params(labelsize=7)
            else:
                a.set_axis_off()
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    save_png(fig, path, dpi=dpi)
