"""LV strain between two phases of a heart in the template's vertex order: GLS, GCS, per segment.

Definitions (all strains in percent, negative in contraction, Lagrangian: lengths of the same
material lines of the template's LV endocardium at ED and at ES; ``docs/clinical.md``):

* **GLS** (:func:`sono3d.phantoms.lv_grid.global_longitudinal_strain_pct`): the mean over the
  three apical views (A4C, A2C, A3C) of the relative change of the view's endocardial contour,
  base to apex to base along the two template meridians in the view.
* **GCS**: the mean over the three short-axis levels (basal, mid, apical; the AHA levels of
  :mod:`sono3d.heart.segments`) of the relative change of the total length of the endocardial ring
  edges in that level.
* **Segmental strain**: for each AHA segment, the relative change of the total length of the
  meridian edges (longitudinal) and of the ring edges (circumferential) whose ED midpoints lie in
  the segment, and the segment's share of the cavity volume at ED and ES
  (:func:`sono3d.heart.segments.segment_volumes_mm3`).

Volumes are in mL from meshes in mm (divergence theorem over the closed cavity: the endocardium
plus the flat cap on its base ring); EF in percent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import InputError
from sono3d.geometry.mesh import signed_volume_triangles
from sono3d.heart.segments import (
    AHA_NAMES,
    LEVELS,
    cavity_faces_by_segment,
    segment_level,
    segment_volumes_mm3,
    template_edge_segments,
)
from sono3d.io import read_mesh
from sono3d.metrics.stats import mae, pearson
from sono3d.phantoms.lv_grid import endocardium_points, global_longitudinal_strain_pct

__all__ = [
    "global_longitudinal_strain_pct",
    "LVStrain",
    "lv_strain",
    "global_circumferential_strain_pct",
    "segmental_strain_pct",
    "cavity_volume_ml",
    "read_template_points",
    "global_strains_pct",
    "strain_agreement",
]


def _edge_lengths(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p[edges[:, 1]] - p[edges[:, 0]], axis=1)


def _strain_by(ed: np.ndarray, es: np.ndarray, edges: np.ndarray, groups: np.ndarray, keys: list[Any],
               members: dict[Any, tuple[int, ...]] | None = None) -> dict[Any, float]:
    """Relative change (percent) of the summed edge lengths of each group."""
    a, b = _edge_lengths(ed, edges), _edge_lengths(es, edges)
    out = {}
    for k in keys:
        sel = np.isin(groups, members[k]) if members is not None else groups == k
        la = a[sel].sum()
        out[k] = float((b[sel].sum() - la) / la * 100.0) if la > 0 else float("nan")
    return out


def cavity_volume_ml(points: np.ndarray) -> float:
    """LV cavity volume (mL, divergence theorem) of a heart or LV cavity in template order."""
    endo = endocardium_points(points)
    return abs(signed_volume_triangles(endo, cavity_faces_by_segment()[0])) / 1000.0


def global_circumferential_strain_pct(ed_points: np.ndarray, es_points: np.ndarray) -> float:
    """GCS (percent): the mean over the basal, mid and apical levels of the ring-length strain."""
    ed, es = endocardium_points(ed_points, "ED"), endocardium_points(es_points, "ES")
    e = template_edge_segments()
    levels = ["basal", "mid", "apical"]
    by_level = _strain_by(ed, es, e["ring"], e["ring_segment"], levels, LEVELS)
    return float(np.mean([by_level[k] for k in levels]))


def segmental_strain_pct(ed_points: np.ndarray, es_points: np.ndarray) -> dict[str, dict[int, float]]:
    """Longitudinal and circumferential strain (percent) of each AHA segment 1..17."""
    ed, es = endocardium_points(ed_points, "ED"), endocardium_points(es_points, "ES")
    e = template_edge_segments()
    segs = list(range(1, 18))
    return {"longitudinal": _strain_by(ed, es, e["meridian"], e["meridian_segment"], segs),
            "circumferential": _strain_by(ed, es, e["ring"], e["ring_segment"], segs)}


@dataclass
class LVStrain:
    """Volumes, EF and strains of the LV between ED and ES.

    Attributes
    ----------
    edv_ml, esv_ml : float
    ef : float
        Ejection fraction in percent.
    gls_pct, gcs_pct : float
    segments : list of dict
        One per AHA segment: ``segment``, ``name``, ``level``, ``edv_ml``, ``esv_ml``, ``ef``
        (percent), ``longitudinal_pct``, ``circumferential_pct``.
    """

    edv_ml: float
    esv_ml: float
    ef: float
    gls_pct: float
    gcs_pct: float
    segments: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"edv_ml": self.edv_ml, "esv_ml": self.esv_ml, "ef": self.ef, "gls_pct": self.gls_pct,
                "gcs_pct": self.gcs_pct, "segments": self.segments}


def lv_strain(ed_points: np.ndarray, es_points: np.ndarray) -> LVStrain:
    """Volumes, EF, GLS, GCS and the 17 segments' figures of one heart at ED and ES (template order).

    Raises :class:`InputError` for points not in the template's order, NaN points, or an empty ED cavity.
    """
    ed, es = endocardium_points(ed_points, "ED mesh"), endocardium_points(es_points, "ES mesh")
    edv, esv = cavity_volume_ml(ed), cavity_volume_ml(es)
    if not edv > 0:
        raise InputError("the ED LV cavity has no volume")
    seg_ed, seg_es = segment_volumes_mm3(ed), segment_volumes_mm3(es)
    st = segmental_strain_pct(ed, es)
    segments = []
    for s in range(1, 18):
        v0, v1 = seg_ed[s] / 1000.0, seg_es[s] / 1000.0
        segments.append({"segment": s, "name": AHA_NAMES[s], "level": segment_level(s), "edv_ml": v0, "esv_ml": v1,
                         "ef": (v0 - v1) / v0 * 100.0 if v0 > 0 else float("nan"),
                         "longitudinal_pct": st["longitudinal"][s], "circumferential_pct": st["circumferential"][s]})
    return LVStrain(edv, esv, (edv - esv) / edv * 100.0, global_longitudinal_strain_pct(ed, es),
                    global_circumferential_strain_pct(ed, es), segments)


def read_template_points(path: Any) -> np.ndarray:
    """Vertices of a mesh file in the template's order (a heart, or an LV cavity): ``[N, 3]`` mm."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    pts = np.asarray(read_mesh(p).points, dtype=np.float64)
    endocardium_points(pts, str(p))  # checks the vertex count and finiteness
    return pts


def global_strains_pct(ed_points: np.ndarray, es_points: np.ndarray) -> tuple[float, float] | None:
    """``(GLS, GCS)`` in percent, or ``None`` when the points are not in the template's vertex order
    (a run whose template is another mesh)."""
    try:
        return (global_longitudinal_strain_pct(ed_points, es_points),
                global_circumferential_strain_pct(ed_points, es_points))
    except InputError:
        return None


def _pearson_dict(x: Any, y: Any) -> dict[str, Any] | None:
    try:
        r = pearson(x, y)
    except InputError:  # fewer than 3 pairs or a constant sample
        return None
    return {"r": r.r, "ci95": list(r.ci), "p": r.p}


def strain_agreement(pred_gls: Any, true_gls: Any, pred_ef: Any, true_ef: Any) -> dict[str, Any]:
    """GLS of predictions against the truth, and the EF-GLS correlation of each (the paper's Table 3).

    Returns ``gls_mae`` (points), ``gls_pearson`` {r, ci95, p}, ``ef_gls_pearson_pred`` (predicted EF
    against predicted GLS) and ``ef_gls_pearson_true`` (the truth's), the Pearson entries ``None``
    where undefined.
    """
    return {"gls_mae": mae(pred_gls, true_gls), "gls_pearson": _pearson_dict(pred_gls, true_gls),
            "ef_gls_pearson_pred": _pearson_dict(pred_ef, pred_gls),
            "ef_gls_pearson_true": _pearson_dict(true_ef, true_gls)}
