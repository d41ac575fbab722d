"""Volumes side by side: three orthogonal slices through one point, one column per volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sono3d.errors import InputError
from sono3d.viz.figures import pyplot, save_png

__all__ = ["volume_slices_figure"]


def volume_slices_figure(columns: list[tuple[str, np.ndarray]], centre: tuple[int, int, int], path: str | Path,
                         outline: np.ndarray | None = None, level: float = 0.25,
                         region: np.ndarray | None = None) -> Path:
    """A grid of slices: rows are the planes ``i = centre[0]``, ``j = centre[1]``, ``k = centre[2]``
    through every volume, columns the volumes (grey levels 0..1, the same voxel grid).

    Parameters
    ----------
    columns : list of (title, ndarray (X, Y, Z))
    centre : (i, j, k)
        Voxel the three planes pass through.
    path : path-like
        PNG to write (atomically).
    outline : ndarray (X, Y, Z), optional
        A reference volume whose ``level`` contour is drawn in every panel (e.g. the truth).
    region : ndarray of bool (X, Y, Z), optional
        Voxels that count; the rest is drawn darkened.
    """
    if not columns:
        raise InputError("no volume to draw")
    shape = columns[0][1].shape
    if any(v.shape != shape for _, v in columns):
        raise InputError("the volumes of a slice figure must share one grid")
    plt = pyplot()
    planes = [("i", lambda v: v[centre[0], :, :]), ("j", lambda v: v[:, centre[1], :]), ("k", lambda v: v[:, :, centre[2]])]
    fig, axes = plt.subplots(3, len(columns), figsize=(2.6 * len(columns), 7.8), squeeze=False)
    for c, (title, vol) in enumerate(columns):
        for r, (name, cut) in enumerate(planes):
            ax = axes[r, c]
            img = np.clip(cut(np.asarray(vol, dtype=np.float32)), 0.0, 1.0)
            if region is not None:
                img = np.where(cut(region), img, 0.35 * img)
            ax.imshow(img.T, cmap="gray", vmin=0.0, vmax=1.0, origin="lower", interpolation="nearest")
            if outline is not None:
                ax.contour(cut(outline).T, levels=[level], colors="tab:orange", linewidths=0.6, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{name} = {centre['ijk'.index(name)]}", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path, dpi=110)
