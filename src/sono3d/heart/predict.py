"""Meshes, LV volumes and EF from six echo views with a trained S2MNet run.

LV cavity of a predicted mesh: the template carries the triangles of its closed LV blood pool
(``lv_cavity_faces``: the LV endocardium plus a flat cap over the base ring, in the template's
vertex indices). The predicted mesh has the template's vertex order, so the same triangles over the
predicted vertices are the predicted cavity; it is closed by construction (checked with
:func:`sono3d.geometry.mesh.require_watertight`) and its volume is taken by the divergence theorem
(:func:`sono3d.heart.clinical.lv_volume_ml`). The run's checkpoint is read by
:func:`sono3d.heart.checkpoint.load_run`.

Frames: the network predicts each phase in its echo frame (the A4C image's frame, see
:mod:`sono3d.heart.data`). When ``views.npz`` holds the views' ``poses``, the meshes are mapped to
the world frame of those poses; otherwise they stay in the echo frame (``report.json`` says which).
Volumes and EF do not depend on the frame.

Phases: two phases are ED and ES (volumes and EF); one phase is ED, or a ``still`` when the views
came from still images (``phase_names`` of ``sono3d heart views``), whose volume is
``lv_volume_ml`` (a still's phase is unknown).

Beyond the meshes, :func:`predict_arrays` runs the **input check** (:mod:`sono3d.heart.input_check`)
and, with a view-plane regressor run, the **overlay** (:mod:`sono3d.heart.overlay`): every given
view's regressed plane and the predicted mesh's label image on it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sono3d.errors import InputError
from sono3d.geometry.mesh import require_watertight
from sono3d.heart.checkpoint import LoadedRun, load_run
from sono3d.heart.clinical import ejection_fraction, lv_volume_ml
from sono3d.heart.data import echo_frame, from_frame, load_views, resize_views
from sono3d.heart.input_check import check_views
from sono3d.heart.overlay import (
    OVERLAY_LABELS,
    label_means,
    sector_masks,
    slice_views,
    template_layers,
)
from sono3d.heart.pose import predict_planes
from sono3d.heart.s2mnet import POSE_KIND
from sono3d.heart.strain import global_strains_pct
from sono3d.heart.template import lv_cavity_with, template_mesh_with
from sono3d.heart.views_intake import intake_views, views_arrays, write_views
from sono3d.io.atomic import atomic_path
from sono3d.io.lock import writer_lock
from sono3d.simulate.echo_views import VIEW_NAMES, ViewOptions
from sono3d.types import PHASES

# LoadedRun, load_run (sono3d.heart.checkpoint) and template_mesh_with (sono3d.heart.template) are
# re-exported: they lived here before.
__all__ = ["LoadedRun", "load_run", "template_mesh_with", "predict_views", "predict_files", "lv_volumes_from_points",
           "Prediction", "predict_arrays", "write_prediction", "require_in_distribution", "input_check_line",
           "FolderPrediction", "predict_folder"]


def lv_volumes_from_points(template: dict[str, np.ndarray], points: np.ndarray) -> float:
    """LV cavity volume (mL, divergence theorem) of a mesh in the template's vertex order.

    ``template`` is the run's template record (:mod:`sono3d.heart.template`).
    """
    cavity = lv_cavity_with(template, points)
    require_watertight(cavity, "predicted LV cavity")
    return lv_volume_ml(cavity, "divergence")


def predict_views(run: LoadedRun, echo: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """Predicted vertices ``[P, V, 3]`` (mm, echo frame) of views ``[P, 6, H, W]`` in [0, 1].

    ``present [6]`` (bool, optional): the views given; the others are blanked. A run trained
    without view dropout needs all six (:class:`InputError` otherwise).
    """
    x = torch.from_numpy(np.ascontiguousarray(resize_views(echo, run.net_config.image_size)))
    p = None
    if present is not None and not np.all(present):
        p = torch.from_numpy(np.asarray(present, dtype=bool)).float()[None].expand(len(x), -1).contiguous()
        x = x * p[:, :, None, None]
    with torch.no_grad():
        return run.model.predict_points(x, p).double().numpy()


@dataclass
class Prediction:
    """What :func:`predict_arrays` computes (nothing written yet).

    Attributes
    ----------
    points : ndarray [P, V, 3]
        Predicted vertices (mm) in ``report["frame"]``.
    meshes : dict
        Phase name to the labelled ``PolyData``.
    report : dict
        The figures of ``report.json`` (see :func:`predict_arrays`).
    echo : ndarray [P, 6, S, S]
        The views as given (missing ones zero), for figures.
    present : ndarray [6] bool
    phase_names : list of str
    overlay : ndarray [P, 6, S, S] uint8 or None
        Label images of the predicted mesh on each view's regressed plane (with a pose run).
    """

    points: np.ndarray
    meshes: dict[str, Any]
    report: dict[str, Any]
    echo: np.ndarray
    present: np.ndarray
    phase_names: list[str]
    overlay: np.ndarray | None = None
    files: list[str] = field(default_factory=list)


def _phase_names(views: dict[str, Any], n: int) -> list[str]:
    names = [str(x) for x in np.atleast_1d(views.get("phase_names", []))]
    return names if len(names) == n and n >= 1 else list(PHASES[:n])


def _view_geometry(views: dict[str, Any], size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixel size ``[6]`` (mm) of the views and the pixels that hold image data ``[6, S, S]``
    (``coverage`` of an intake, else the sectors of ``opening_deg``/``depth_mm``, else ``None``).
    Without ``spacing_mm`` the cohort's default fields of view are assumed."""
    if "spacing_mm" in views and np.shape(views["spacing_mm"]) == (len(VIEW_NAMES),):
        spacing = np.asarray(views["spacing_mm"], dtype=np.float64)
    else:
        opt = ViewOptions()
        spacing = np.array([(opt.apical_fov_mm if v.startswith("a") else opt.sax_fov_mm) / size for v in VIEW_NAMES])
    cov = views.get("coverage")
    if cov is not None and np.shape(cov) == (len(VIEW_NAMES), size, size):
        return spacing, np.asarray(cov, dtype=bool)
    if "opening_deg" in views and "depth_mm" in views:
        return spacing, sector_masks(views["opening_deg"], views["depth_mm"], spacing, size)
    return spacing, None


def predict_arrays(run: LoadedRun, views: dict[str, Any], pose_run: LoadedRun | None = None,
                   source: str | os.PathLike[str] | None = None, views_transform: Any = None,
                   views_style: dict[str, Any] | None = None) -> Prediction:
    """Meshes, volumes, EF, the input check and (with ``pose_run``) the overlay of views in memory.

    Parameters
    ----------
    run : LoadedRun
        An S2MNet run.
    views : dict
        ``echo [P, 6, H, W]`` in [0, 1] and ``present [6]`` (as :func:`sono3d.heart.data.load_views`
        or :func:`sono3d.heart.views_intake.views_arrays` give them), optional ``poses``,
        ``phase_names``, ``spacing_mm``, ``coverage``, ``opening_deg``, ``depth_mm``.
    pose_run : LoadedRun, optional
        A view-plane regressor run: each given view's plane and the overlay.
    source : path-like, optional
        The views file, recorded as ``views`` (as given) so that ``sono3d report`` finds it later.
    views_transform, views_style : callable and dict, optional
        The style bridge (``--style``, issue 15): a map from ``views`` to new echo images
        ``[P, 6, H, W]`` (real views to the synthetic style) that the networks and the input check
        see instead (the figures keep the views as given), and its description (``report["style"]``).

    Returns
    -------
    Prediction. Its ``report``: ``lv_edv_ml`` (and ``lv_esv_ml``, ``ef`` in percent for ED and ES;
    ``lv_volume_ml`` for a still; ``gls_pct`` and ``gcs_pct`` (:mod:`sono3d.heart.strain`) for ED and
    ES, null for a template of another vertex order), ``phases``, ``views_given`` (the present
    views), ``views`` (``source``), ``frame``,
    ``input_check`` (:func:`sono3d.heart.input_check.check_views`), ``planes`` (with a pose run:
    per view the regressed plane's apex in mm and rotation columns in the echo frame; and
    ``overlay_grey``: per view and phase the views' mean grey level inside the overlaid LV blood pool
    and myocardium, :func:`sono3d.heart.overlay.label_means`),
    ``seconds`` (all of it), ``seconds_by_stage`` (network, input check, overlay) and ``epoch``.
    """
    echo = np.asarray(views["echo"], dtype=np.float32)
    present = np.asarray(views.get("present", np.ones(echo.shape[1], dtype=bool)), dtype=bool)
    if pose_run is not None and pose_run.kind != POSE_KIND:
        raise InputError(f"{pose_run.path} holds a '{pose_run.kind}' model checkpoint, but --pose-run needs a "
                         f"'{POSE_KIND}' run (sono3d heart train ... --model pose)")
    t0 = time.perf_counter()
    net_echo = echo
    if views_transform is not None:  # style bridge (issue 15); missing views stay blank
        net_echo = np.asarray(views_transform(views), dtype=np.float32) * present[None, :, None, None]
    pts = echo_pts = predict_views(run, net_echo, present)
    t_net = time.perf_counter() - t0
    frame = "echo"
    poses = views.get("poses")
    if poses is not None:
        pts = np.stack([from_frame(pts[p], echo_frame(poses[p, 0])) for p in range(len(pts))])
        frame = "world"
    vols = [lv_volumes_from_points(run.template, pts[p]) for p in range(len(pts))]
    names = _phase_names(views, len(pts))
    t1 = time.perf_counter()
    check = check_views(run.model, (run.state or {}).get("input_check"),
                        resize_views(net_echo, run.net_config.image_size), present)
    t_check = time.perf_counter() - t1
    report: dict[str, Any] = {"lv_edv_ml": vols[0], "phases": names,
                              "views_given": [v for v, p in zip(VIEW_NAMES, present) if p], "frame": frame,
                              "epoch": run.epoch}
    if source is not None:
        report["views"] = os.fspath(source)
    if views_style:
        report["style"] = dict(views_style)
    if names == ["still"]:
        report = {"lv_volume_ml": vols[0], **{k: v for k, v in report.items() if k != "lv_edv_ml"}}
    if len(pts) == 2:
        report["lv_esv_ml"] = vols[1]
        report["ef"] = ejection_fraction(vols[0], vols[1])
        strains = global_strains_pct(pts[0], pts[1])  # None for a template of another vertex order
        report["gls_pct"], report["gcs_pct"] = strains if strains is not None else (None, None)
    report["input_check"] = check
    overlay = None
    t_overlay = 0.0
    if pose_run is not None:
        t2 = time.perf_counter()
        size = echo.shape[-1]
        spacing, masks = _view_geometry(views, size)
        rot, apex = predict_planes(pose_run, net_echo, present)
        layers = template_layers(run.template)
        overlay = np.stack([slice_views(layers, echo_pts[p], rot[p], apex[p], spacing, size, masks)[0]
                            for p in range(len(pts))])
        report["planes"] = {VIEW_NAMES[j]: [{"apex_mm": apex[p, j].round(2).tolist(),
                                             "rotation": rot[p, j].round(4).tolist()} for p in range(len(pts))]
                            for j in np.flatnonzero(present)}
        report["overlay_labels"] = OVERLAY_LABELS
        # Grey levels of the views as given under the overlay (blood should be darker than myocardium).
        report["overlay_grey"] = {VIEW_NAMES[j]: [label_means(echo[p, j], overlay[p, j]) for p in range(len(pts))]
                                  for j in np.flatnonzero(present)}
        t_overlay = time.perf_counter() - t2
    report["seconds"] = time.perf_counter() - t0
    report["seconds_by_stage"] = {"network": t_net, "input_check": t_check, "overlay": t_overlay}
    report["seconds_per_phase"] = t_net / len(pts)
    meshes = {names[p]: template_mesh_with(run.template, pts[p]) for p in range(len(pts))}
    return Prediction(pts, meshes, report, echo, present, names, overlay)


def input_check_line(check: dict[str, Any]) -> str | None:
    """One line saying why an input is out of the training distribution (``None`` when it is in,
    or when the check is unavailable: then its reason)."""
    if not check.get("available", False):
        return f"input check unavailable: {check.get('reason')}"
    if check["in_distribution"]:
        return None
    parts = [f"score {check['score']:.2f} > 1"] if check["score"] is not None and check["score"] > 1 else []
    for v in check["per_view"]:
        if v["present"] and (v["score"] > 1 or v["predicted_view"] != v["view"]):
            wrong = v["predicted_view"] != v["view"]
            parts.append(f"{v['view']} {v['score']:.2f}" + (f" (looks like {v['predicted_view']})" if wrong else ""))
    return "input out of the training distribution: " + "; ".join(parts)


def require_in_distribution(prediction: Prediction) -> None:
    """:class:`InputError` (``--strict``) when the input check calls the views out of distribution."""
    check = prediction.report["input_check"]
    if check.get("available") and not check["in_distribution"]:
        raise InputError(f"{input_check_line(check)} (--strict)")


def write_prediction(prediction: Prediction, out_dir: str | os.PathLike[str], extra_files: tuple[str, ...] = ()
                     ) -> dict[str, Any]:
    """Write ``heart_<phase>.vtp`` per phase and ``report.json`` (each atomically) into ``out_dir``.

    ``extra_files``: names of files the caller writes (or wrote) into ``out_dir``, listed in the report.
    Returns the report.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for ph, mesh in prediction.meshes.items():
        path = out / f"heart_{ph}.vtp"
        with atomic_path(path) as tmp:
            mesh.save(str(tmp), binary=True)
        files.append(str(path))
    report = dict(prediction.report)
    report["files"] = files + [str(out / f) for f in extra_files]
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


@dataclass
class FolderPrediction:
    """What :func:`predict_folder` wrote and computed.

    Attributes
    ----------
    report : dict
        ``report.json`` as written (its ``files`` include ``overlay.png`` when a pose run was given:
        the caller draws it from ``prediction``, see ``sono3d heart predict``).
    prediction : Prediction
    views_file : Path
        The views file the prediction came from (``OUT_DIR/views.npz`` for recordings).
    warnings : list of str
        One line each: the intake's (pixel size assumed, colour Doppler, ...) and the input check's.
    """

    report: dict[str, Any]
    prediction: Prediction
    views_file: Path
    warnings: list[str]


def predict_folder(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                   views: str | os.PathLike[str] | None = None,
                   recordings: dict[str, str | os.PathLike[str]] | None = None,
                   pose_run: str | os.PathLike[str] | None = None, strict: bool = False,
                   depth_mm: float | dict[str, float] | None = None, ed_frame: int | None = None,
                   es_frame: int | None = None, mirror: bool = False, views_transform: Any = None,
                   views_style: dict[str, Any] | None = None) -> FolderPrediction:
    """``sono3d heart predict``: a views file or the recordings themselves to a result folder.

    Parameters
    ----------
    views : path-like, optional
        A ``views.npz`` (:func:`sono3d.heart.data.load_views`).
    recordings : dict, optional
        View name to a recording (image, folder of images, video, DICOM), taken in by
        :func:`sono3d.heart.views_intake.intake_views` (with ``depth_mm``, ``ed_frame``,
        ``es_frame``, ``mirror``); ``views.npz`` and ``views.png`` are written into ``out_dir``.
    pose_run : path-like, optional
        A view-plane regressor run: the planes and the overlay (:func:`predict_arrays`).
    strict : bool
        Refuse (:class:`InputError`, nothing written) views the input check calls out of distribution.
    views_transform, views_style : optional
        The style bridge (:func:`predict_arrays`).

    Exactly one of ``views`` and ``recordings`` is needed. Everything is computed before anything
    is written. Writes ``heart_<phase>.vtp``, ``report.json`` (and the intake's files).
    """
    if (views is None) == (not recordings):
        raise InputError("give either a views file or view recordings (--a4c ...), not both" if views is not None
                         else "no views: give a views.npz (--views) or recordings (--a4c, --a2c, ..., --sax-apical)")
    with writer_lock(out_dir, "output folder"):
        out = Path(out_dir)
        run = load_run(run_dir, expect_kind="s2mnet")
        pose = load_run(pose_run, expect_kind=POSE_KIND) if pose_run is not None else None
        warnings: list[str] = []
        intake = None
        if recordings:
            intake = intake_views(recordings, options=ViewOptions(), depth_mm=depth_mm, ed_frame=ed_frame,
                                  es_frame=es_frame, mirror=mirror)
            warnings += intake.warnings
            arrays, views_file = views_arrays(intake), out / "views.npz"
        else:
            arrays, views_file = load_views(views, run.net_config.n_views), Path(views)
        prediction = predict_arrays(run, arrays, pose, source=views_file, views_transform=views_transform,
                                    views_style=views_style)
        if strict:
            require_in_distribution(prediction)
        line = input_check_line(prediction.report["input_check"])
        if line:
            warnings.append(line)
        extra: tuple[str, ...] = ()
        if intake is not None:
            out.mkdir(parents=True, exist_ok=True)
            write_views(views_file, intake)
            extra += ("views.npz", "views.png")
        if prediction.overlay is not None:
            extra += ("overlay.png",)
        report = write_prediction(prediction, out, extra)
        return FolderPrediction(report, prediction, views_file, warnings)


def predict_files(run_dir: str | os.PathLike[str], views_path: str | os.PathLike[str],
                  out_dir: str | os.PathLike[str], pose_run: str | os.PathLike[str] | None = None,
                  strict: bool = False) -> dict[str, Any]:
    """A ``views.npz`` to ``heart_<phase>.vtp`` and ``report.json`` in ``out_dir`` (:func:`predict_folder`);
    returns the report. The overlay figure is the caller's."""
    return predict_folder(run_dir, out_dir, views=views_path, pose_run=pose_run, strict=strict).report
