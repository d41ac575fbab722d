"""Clinical numbers from heart meshes: LV volumes, ejection fraction, and agreement with the truth.

Two routes to a left-ventricular volume:

* **divergence** (default): the volume enclosed by the closed LV cavity surface, by the divergence
  theorem (:func:`sono3d.geometry.mesh.enclosed_volume_mm3`). Exact for any closed, consistently
  oriented triangle surface, convex or not.
* **delaunay**: the S2MNet paper's route (section 5.4): optionally subsample the LV points (the
  paper keeps 10%), tetrahedralise them with a Delaunay triangulation and sum the tetrahedra. A
  Delaunay tetrahedralisation fills the convex hull of the points, so this is the **convex-hull
  volume**: exact for convex cavities, an overestimate for any concave one (on the GHDHeart LV,
  about 196 mL by this route against 115 mL enclosed). It is kept to compare with the paper.

Volumes are in mL (1 mL = 1000 mm³) from meshes in mm. EF is in percent.

Strain (GLS, GCS, per segment) and the AHA 17 segments live in :mod:`sono3d.heart.strain` and
:mod:`sono3d.heart.segments` and are re-exported here.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from sono3d.errors import FileFormatError, InputError
from sono3d.geometry.mesh import enclosed_volume_mm3
from sono3d.heart.segments import AHA_NAMES, aha_segments, segment_volumes_mm3, template_segments, wall_landmarks
from sono3d.heart.strain import (
    LVStrain,
    global_circumferential_strain_pct,
    global_longitudinal_strain_pct,
    lv_strain,
    segmental_strain_pct,
    strain_agreement,
)
from sono3d.metrics.stats import BlandAltman, Pearson, bland_altman, mae, pearson, spearman

__all__ = [
    "Agreement",
    "agreement",
    "correlate",
    "correlate_table",
    "read_table_columns",
    "delaunay_volume_mm3",
    "ejection_fraction",
    "lv_volume_ml",
    # strain and AHA segments (sono3d.heart.strain, sono3d.heart.segments)
    "AHA_NAMES",
    "LVStrain",
    "aha_segments",
    "global_circumferential_strain_pct",
    "global_longitudinal_strain_pct",
    "lv_strain",
    "segment_volumes_mm3",
    "segmental_strain_pct",
    "strain_agreement",
    "template_segments",
    "wall_landmarks",
]

MM3_PER_ML = 1000.0


def delaunay_volume_mm3(points: Any, subsample: float = 1.0, seed: int = 0) -> float:
    """Summed volume (mm³) of the Delaunay tetrahedra of a point cloud: its convex-hull volume.

    Parameters
    ----------
    points : array, shape (N, 3), or a mesh with ``.points``
        Points in mm (for example the LV vertices of a predicted heart mesh).
    subsample : float in (0, 1]
        Fraction of the points kept, drawn without replacement with ``seed`` (the paper uses 0.1).
    seed : int
        Seed of the subsampling draw.
    """
    from scipy.spatial import Delaunay, QhullError

    pts = np.asarray(points.points if hasattr(points, "points") else points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"points must have shape [N, 3], got {pts.shape}")
    if not np.isfinite(pts).all():
        raise InputError("points contain NaN or infinite values")
    if not 0.0 < subsample <= 1.0:
        raise InputError(f"subsample must lie in (0, 1], got {subsample}")
    if subsample < 1.0:
        keep = max(4, int(round(subsample * len(pts))))
        pts = pts[np.random.default_rng(seed).choice(len(pts), size=min(keep, len(pts)), replace=False)]
    if len(pts) < 4:
        raise InputError(f"a volume needs at least 4 points, got {len(pts)}")
    try:
        tri = Delaunay(pts)
    except QhullError as exc:
        raise InputError("points are degenerate (coplanar or collinear); they enclose no volume") from exc
    a, b, c, d = (pts[tri.simplices[:, k]] for k in range(4))
    return float(np.abs(np.einsum("ij,ij->i", b - a, np.cross(c - a, d - a))).sum() / 6.0)


def lv_volume_ml(mesh: Any, method: str = "divergence", subsample: float = 1.0, seed: int = 0) -> float:
    """Left-ventricular cavity volume in mL.

    Parameters
    ----------
    mesh : pyvista.PolyData (or points [N, 3] for ``"delaunay"``)
        The LV cavity in mm: a closed surface for ``"divergence"`` (an open one raises
        :class:`InputError`), any point set for ``"delaunay"``.
    method : {"divergence", "delaunay"}
        See the module notes; ``subsample`` and ``seed`` apply to ``"delaunay"`` only.
    """
    if method == "divergence":
        if not hasattr(mesh, "faces"):
            raise InputError("the divergence route needs a closed surface mesh, not bare points")
        return enclosed_volume_mm3(mesh, check=True) / MM3_PER_ML
    if method == "delaunay":
        return delaunay_volume_mm3(mesh, subsample=subsample, seed=seed) / MM3_PER_ML
    raise InputError(f"volume method must be 'divergence' or 'delaunay', got {method!r}")


def ejection_fraction(edv: Any, esv: Any) -> Any:
    """Ejection fraction in percent, ``EF = (EDV - ESV) / EDV * 100``.

    Scalars or arrays (element-wise) in any one volume unit. EDV must be positive and ESV
    non-negative; an ESV above the EDV gives a negative EF (reported, not hidden).
    """
    edv_a = np.asarray(edv, dtype=np.float64)
    esv_a = np.asarray(esv, dtype=np.float64)
    if not (np.isfinite(edv_a).all() and np.isfinite(esv_a).all()):
        raise InputError("volumes contain NaN or infinite values")
    if (edv_a <= 0).any():
        raise InputError("end-diastolic volume must be positive")
    if (esv_a < 0).any():
        raise InputError("end-systolic volume must be non-negative")
    ef = (edv_a - esv_a) / edv_a * 100.0
    return float(ef) if ef.ndim == 0 else ef


@dataclass(frozen=True)
class Agreement:
    """Agreement of predicted values with the truth (e.g. EF in percentage points).

    Attributes
    ----------
    n : int
    mae : float
        Mean absolute error, in the values' units.
    pearson : Pearson or None
        r, 95% CI and p (None when fewer than 3 pairs or a constant sample make it undefined).
    bland_altman : BlandAltman
        Bias (prediction minus truth) and limits of agreement.
    """

    n: int
    mae: float
    pearson: Pearson | None
    bland_altman: BlandAltman

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: ``n``, ``mae``, ``pearson`` {r, ci95, p} or null, ``bias``, ``loa``."""
        p = self.pearson
        return {
            "n": self.n,
            "mae": self.mae,
            "pearson": None if p is None else {"r": p.r, "ci95": list(p.ci), "p": p.p},
            "bias": self.bland_altman.bias,
            "loa": list(self.bland_altman.loa),
        }


def agreement(pred: Any, truth: Any) -> Agreement:
    """MAE, Pearson r with its 95% CI, and Bland-Altman of paired predictions against the truth."""
    ba = bland_altman(pred, truth)  # validates pairing, finiteness and n >= 2
    try:
        r = pearson(pred, truth)
    except InputError:
        r = None  # too few pairs or a constant sample: the correlation is undefined, the errors are not
    return Agreement(n=ba.n, mae=mae(pred, truth), pearson=r, bland_altman=ba)


# --------------------------------------------------------------------------------------------
# cohort tables (the paper's EF-against-GLPS analysis)

_MISSING = {"", "na", "n/a", "nan", "none", "null"}


def read_table_columns(path: str | os.PathLike[str], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """Two numeric columns of a delimited text table (comma, semicolon or tab; header row first).

    Rows where either cell is empty or a missing marker (``NA``, ``NaN``, ``null``...) are skipped;
    any other non-numeric cell raises :class:`InputError` naming its row and column.

    Returns
    -------
    x, y : ndarray, shape (n,), float64
        The paired values of the rows kept.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path}: not a text table ({exc.reason})") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise FileFormatError(f"{path}: empty table (no header row)")
    try:
        dialect: Any = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel  # a single column: no delimiter to find
    rows = list(csv.reader(lines, dialect))
    header = [h.strip() for h in rows[0]]
    for col in (x, y):
        if col not in header:
            raise InputError(f"{path}: no column {col!r} (columns: {', '.join(header)})")
    ix, iy = header.index(x), header.index(y)
    xs: list[float] = []
    ys: list[float] = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [row[i].strip() if i < len(row) else "" for i in (ix, iy)]
        if any(c.lower() in _MISSING for c in cells):
            continue
        values = []
        for col, cell in zip((x, y), cells, strict=True):
            try:
                v = float(cell)
            except ValueError:
                raise InputError(f"{path}: row {line_no}, column {col!r}: {cell!r} is not a number") from None
            if not math.isfinite(v):
                raise InputError(f"{path}: row {line_no}, column {col!r}: {cell!r} is not finite")
            values.append(v)
        xs.append(values[0])
        ys.append(values[1])
    return np.asarray(xs), np.asarray(ys)


def correlate(x: Any, y: Any) -> dict[str, Any]:
    """Pearson r (95% Fisher-z CI, p) and Spearman rho (p) of paired samples, as a JSON-ready dict.

    Keys: ``pearson`` {``r``, ``ci95``, ``p``}, ``spearman`` {``rho``, ``p``}, ``n``. Needs at
    least 3 pairs and non-constant samples (:class:`InputError` otherwise).
    """
    n = int(np.size(x))
    if n < 3:
        raise InputError(f"a correlation needs at least 3 numeric rows, got {n}")
    p = pearson(x, y)
    s = spearman(x, y)
    return {
        "pearson": {"r": p.r, "ci95": [p.ci[0], p.ci[1]], "p": p.p},
        "spearman": {"rho": s.rho, "p": s.p},
        "n": p.n,
    }


def correlate_table(path: str | os.PathLike[str], x: str, y: str) -> dict[str, Any]:
    """:func:`correlate` of two columns of a table file (see :func:`read_table_columns`)."""
    xs, ys = read_table_columns(path, x, y)
    if xs.size < 3:
        raise InputError(f"{path}: a correlation needs at least 3 numeric rows in {x!r} and {y!r}, got {xs.size}")
    return correlate(xs, ys)
