"""The overlay figure: label contours of the predicted heart drawn on each input view (the heart paper's Fig. 5)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from sono3d.viz.figures import pyplot, save_png

__all__ = ["overlay_figure", "LABEL_COLOURS"]

# One colour per drawn label (matplotlib names), keyed by the label's name.
LABEL_COLOURS = {"lv_blood": "tab:red", "rv_blood": "tab:blue", "la_blood": "tab:orange", "ra_blood": "tab:cyan",
                 "lv_myocardium": "yellow"}


def overlay_figure(echo: np.ndarray, labels: np.ndarray, present: Sequence[bool], view_names: Sequence[str],
                   phase_names: Sequence[str], label_values: Mapping[str, int], path: str | os.PathLike[str],
                   title: str | None = None, dpi: int = 90) -> None:
    """Write the overlay PNG (atomically): one row per phase, one column per present view.

    Parameters
    ----------
    echo : ndarray [P, V, S, S]
        The views, grey in [0, 1].
    labels : ndarray [P, V, S, S]
        Label images on the same pixel grid.
    present : sequence of bool [V]
    view_names, phase_names : sequences of str
    label_values : mapping
        Label name to its value in ``labels``; each becomes one contour colour (:data:`LABEL_COLOURS`).
    title : str, optional
        A line above the panels (e.g. the volumes and the input check's verdict).
    """
    plt = pyplot()
    cols = [j for j, p in enumerate(present) if p]
    P = len(echo)
    # at least 7 inches wide, so that the title and the legend fit above and below a single view
    fig, axes = plt.subplots(P, len(cols), figsize=(max(2.6 * len(cols) + 0.4, 7.0), 2.7 * P + (0.5 if title else 0.2)),
                             squeeze=False)
    for p in range(P):
        for c, j in enumerate(cols):
            ax = axes[p][c]
            ax.imshow(echo[p, j], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            for name, value in label_values.items():
                m = (labels[p, j] == value).astype(float)
                if m.any():
                    ax.contour(m, levels=[0.5], colors=[LABEL_COLOURS.get(name, "white")], linewidths=1.2)
            ax.set_title(f"{view_names[j]} ({phase_names[p]})", fontsize=9)
            ax.set_axis_off()
    handles = [plt.Line2D([], [], color=LABEL_COLOURS.get(n, "white"), label=n.replace("_", " ")) for n in label_values]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95 if title else 1))
    save_png(fig, path, dpi=dpi)
