"""Overlays: the predicted heart sliced on each view's regressed plane (the paper's section 5.3, Fig. 5).

For every given view, the view-plane regressor (:mod:`sono3d.heart.pose`) gives its plane in the
echo frame, where S2MNet predicts the heart; the predicted mesh is cut by that plane and its
cross-sections filled into a label image on the view's own pixel grid
(:func:`sono3d.simulate.echo_views.render_labels`: even-odd fill of each closed surface, later
layers on top, the same painter as the cohort's true label images). The label values are the
cohort's view labels (:data:`sono3d.phantoms.heart.VIEW_LABELS`); :data:`OVERLAY_LABELS` are the
ones an overlay draws.

The layers come from the run's template: a template with the parametric heart's connectivity
(every generated cohort) is painted exactly like the cohort's label images
(:func:`~sono3d.simulate.echo_views.phantom_layers`); any other labelled template per ``elemTag``
region (:func:`~sono3d.simulate.echo_views.mesh_layers`), which paints walls but no blood pools.

Figure of merit (:func:`label_dice`): the Dice overlap of one label (the LV blood pool) between the
overlay and the true label image, inside the view's sector.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sono3d.geometry.sector import sector_for_probe, sector_mask
from sono3d.heart.pose import plane_matrix
from sono3d.heart.template import template_mesh_with
from sono3d.phantoms.heart import VIEW_LABELS, heart_topology
from sono3d.simulate.echo_views import ViewLayers, mesh_layers, phantom_layers, render_labels

__all__ = ["OVERLAY_LABELS", "template_layers", "slice_views", "label_dice", "sector_masks", "label_means"]

# What an overlay draws (the paper's Fig. 5: chambers and myocardium), in drawing order.
OVERLAY_LABELS: dict[str, int] = {
    "lv_myocardium": VIEW_LABELS["lv_myocardium"], "lv_blood": VIEW_LABELS["lv_blood"],
    "rv_blood": VIEW_LABELS["rv_blood"], "la_blood": VIEW_LABELS["la_blood"], "ra_blood": VIEW_LABELS["ra_blood"],
}


def template_layers(template: dict[str, Any]) -> ViewLayers:
    """The paint layers of a run's template record (see the module notes)."""
    faces = np.asarray(template["faces"], dtype=np.int64)
    topo = heart_topology()
    n_points = int(np.asarray(template["points"]).shape[0])
    if n_points == len(topo.part_of_point) and faces.shape == topo.faces.shape and np.array_equal(faces, topo.faces):
        return phantom_layers()
    return mesh_layers(template_mesh_with(template, template["points"]))


def slice_views(layers: ViewLayers, points: np.ndarray, rotation: np.ndarray, apex: np.ndarray,
                spacing_mm: np.ndarray, size: int, masks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Label images of a mesh cut by each view's plane.

    Parameters
    ----------
    layers : ViewLayers
        :func:`template_layers` of the run's template.
    points : ndarray [V, 3]
        The mesh's vertices (mm, echo frame), in the template's order.
    rotation, apex : ndarray [6, 3, 3], [6, 3]
        Each view's plane (:func:`sono3d.heart.pose.predict_planes`); views with NaN are skipped.
    spacing_mm : ndarray [6]
        Pixel size of each view (mm, square pixels).
    size : int
        Edge of the views (pixels).
    masks : ndarray [6, size, size] bool, optional
        Pixels to keep (the views' sectors).

    Returns
    -------
    labels : ndarray [6, size, size] uint8
    planes : ndarray [6, 4, 4]
        The views' image_to_world matrices in the echo frame (NaN for skipped views).
    """
    n = len(rotation)
    labels = np.zeros((n, size, size), dtype=np.uint8)
    planes = np.full((n, 4, 4), np.nan)
    for v in range(n):
        if not np.all(np.isfinite(rotation[v])):
            continue
        planes[v] = plane_matrix(rotation[v], apex[v], float(spacing_mm[v]), size)
        labels[v] = render_labels(points, layers, planes[v], (size, size), None if masks is None else masks[v])
    return labels, planes


def sector_masks(opening_deg: np.ndarray, depth_mm: np.ndarray, spacing_mm: np.ndarray, size: int) -> np.ndarray:
    """The views' sectors ``[6, size, size]`` (bool): apex at the top centre, full opening
    ``opening_deg``, depth ``depth_mm``, square pixels ``spacing_mm`` (the cohort's view geometry)."""
    out = np.zeros((len(opening_deg), size, size), dtype=bool)
    for v, (a, d, sp) in enumerate(zip(opening_deg, depth_mm, spacing_mm)):
        px = (float(sp), float(sp))
        out[v] = sector_mask(sector_for_probe((size, size), px, float(a), float(d)), (size, size), px)
    return out


def label_dice(pred: np.ndarray, true: np.ndarray, label: int = VIEW_LABELS["lv_blood"]) -> float:
    """Dice overlap of one label between two label images (NaN when neither has it)."""
    a, b = np.asarray(pred) == label, np.asarray(true) == label
    total = int(a.sum()) + int(b.sum())
    return float(2.0 * np.logical_and(a, b).sum() / total) if total else float("nan")


def label_means(image: np.ndarray, labels: np.ndarray,
                names: tuple[str, ...] = ("lv_blood", "lv_myocardium")) -> dict[str, float]:
    """Mean grey level of an image inside each named overlay label (NaN where the label is absent).

    Used on real views, where no true label image exists: blood is dark in echo, so the overlaid LV
    blood pool should be darker than the overlaid myocardium when the overlay sits on the heart.

    Parameters
    ----------
    image : ndarray [S, S]
        One view's grey levels (the views as given, in [0, 1]).
    labels : ndarray [S, S] uint8
        The overlay's label image of that view (:func:`slice_views`).
    names : tuple of str
        Keys of :data:`OVERLAY_LABELS`.
    """
    image, labels = np.asarray(image, dtype=np.float64), np.asarray(labels)
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    out: dict[str, float] = {}
    for name in names:
        sel = labels == OVERLAY_LABELS[name]
        out[name] = float(image[sel].mean()) if sel.any() else float("nan")
    return out
