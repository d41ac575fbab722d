"""Meshes, LV volumes and EF from six echo views with a trained S2MNet run.

LV cavity of a predicted mesh: the template carries the triangles of its closed LV blood pool
(``lv_cavity_faces``: the LV endocardium plus a flat cap over the base ring, in the template's
vertex indices). The predicted mesh has the template's vertex order, so the same triangles over the
predicted vertices are the predicted cavity; it is closed by construction (checked with
:func:`sono3d.geometry.mesh.require_watertight`) and its volume is taken by the divergence theorem
(:func:`sono3d.heart.clinical.lv_volume_ml`).

Frames: the network predicts each phase in its echo frame (the A4C image's frame, see
:mod:`sono3d.heart.data`). When ``views.npz`` holds the views' ``poses``, the meshes are mapped to
the world frame of those poses; otherwise they stay in the echo frame (``report.json`` says which).
Volumes and EF do not depend on the frame.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import FileFormatError, InputError

__all__ = ["LoadedRun", "load_run", "template_mesh_with", "predict_views", "predict_files", "lv_volumes_from_points"]


@dataclass
class LoadedRun:
    """A trained model in eval mode with what it needs to make meshes."""

    kind: str
    model: Any
    net_config: Any
    template: dict[str, np.ndarray]
    targets: str
    epoch: int
    path: Path


def load_run(run_dir: str | os.PathLike[str] | None, expect_kind: str | None = None) -> LoadedRun:
    """Load ``RUN_DIR/checkpoint.pt`` (``weights_only=True``) and rebuild its model on the CPU.

    Raises :class:`InputError` for a folder without a checkpoint, a file that is not an S2MNet-run
    checkpoint, or a checkpoint of another model kind than ``expect_kind``.
    """
    import torch

    from sono3d.heart.s2mnet import NetConfig, build_model
    from sono3d.heart.train import CHECKPOINT, CHECKPOINT_FORMAT

    if run_dir is None:
        raise InputError("no run folder given")
    run = Path(run_dir)
    path = run / CHECKPOINT if run.is_dir() or not run.suffix else run
    if not run.exists():
        raise InputError(f"{run}: no such run folder")
    if not path.is_file():
        raise InputError(f"{run}: no {CHECKPOINT} (train a model into this folder first)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors of a corrupt or foreign file
        raise FileFormatError(f"{path}: not a readable checkpoint ({' '.join(str(exc).split())[:100]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a sono3d S2MNet/voxel checkpoint")
    kind = state["kind"]
    if expect_kind is not None and kind != expect_kind:
        raise InputError(f"{run} holds a '{kind}' model checkpoint, but a '{expect_kind}' run is needed here")
    try:
        net = NetConfig(**state["net"])
    except TypeError as exc:  # fields this version does not know: a checkpoint of a newer network
        raise InputError(f"{path}: a network this version of sono3d cannot build ({exc})") from None
    extra = state["extra"]
    tpl = {k: v.numpy() for k, v in state["template"].items()}
    if kind == "s2mnet":
        model = build_model("s2mnet", net, template_points=torch.as_tensor(tpl["points"]),
                            displacement_scale_mm=float(extra["displacement_scale_mm"]))
    else:
        model = build_model("voxel", net, box_centre=extra["box_centre"], box_half=extra["box_half"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise InputError(f"{path}: its weights do not fit the network its config describes (a checkpoint of "
                         "another architecture; retrain it)") from None
    model.eval()
    return LoadedRun(kind, model, net, tpl, str(extra.get("targets", "identity")), int(state["epoch"]), run)


def template_mesh_with(template: dict[str, np.ndarray], points: np.ndarray) -> Any:
    """A ``PolyData`` with the template's faces and labels over ``points [V, 3]`` (mm).

    Carries ``elemTag`` (and ``part``) as cell and point arrays and the field array
    ``lv_cavity_faces``, like the cohort's own meshes.
    """
    import pyvista as pv

    pts = np.asarray(points, dtype=np.float32)
    f = np.asarray(template["faces"], dtype=np.int64)
    mesh = pv.PolyData(pts, np.hstack([np.full((len(f), 1), 3), f]).ravel())
    for key, arr in template.items():
        if key.startswith("cell_"):
            mesh.cell_data[key[5:]] = np.asarray(arr).astype(np.int32)
        elif key.startswith("point_"):
            a = np.asarray(arr)
            mesh.point_data[key[6:]] = a.astype(np.uint8 if key == "point_lv_endocardium" else np.int32)
    if "lv_cavity_faces" in template:
        mesh.field_data["lv_cavity_faces"] = np.asarray(template["lv_cavity_faces"]).astype(np.int32)
    return mesh


def lv_volumes_from_points(template: dict[str, np.ndarray], points: np.ndarray) -> float:
    """LV cavity volume (mL, divergence theorem) of a mesh in the template's vertex order."""
    from sono3d.geometry.mesh import require_watertight
    from sono3d.heart.clinical import lv_volume_ml
    from sono3d.phantoms.heart import lv_cavity_from_heart

    if "lv_cavity_faces" not in template:
        raise InputError("the run's template carries no LV cavity (lv_cavity_faces); no volumes can be computed")
    cavity = lv_cavity_from_heart(template_mesh_with(template, points))
    require_watertight(cavity, "predicted LV cavity")
    return lv_volume_ml(cavity, "divergence")


def predict_views(run: LoadedRun, echo: np.ndarray) -> np.ndarray:
    """Predicted vertices ``[P, V, 3]`` (mm, echo frame) of views ``[P, 6, H, W]`` in [0, 1]."""
    import torch

    from sono3d.heart.data import resize_views

    x = torch.from_numpy(np.ascontiguousarray(resize_views(echo, run.net_config.image_size)))
    with torch.no_grad():
        return run.model.predict_points(x).double().numpy()


def predict_files(run_dir: str | os.PathLike[str], views_path: str | os.PathLike[str],
                  out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``sono3d heart predict``: write ``heart_ed.vtp`` (and ``heart_es.vtp``) and ``report.json``.

    ``report.json`` holds ``lv_edv_ml`` (and ``lv_esv_ml``, ``ef`` in percent when both phases are
    given), ``frame`` (``world`` or ``echo``), ``seconds`` and the files written. Everything is
    computed before anything is written, so a failure leaves no partial output.
    """
    from sono3d.heart.clinical import ejection_fraction
    from sono3d.heart.data import PHASES, echo_frame, from_frame, load_views
    from sono3d.io.atomic import atomic_path

    run = load_run(run_dir, expect_kind="s2mnet")
    v = load_views(views_path, run.net_config.n_views)
    t0 = time.perf_counter()
    pts = predict_views(run, v["echo"])
    frame = "echo"
    if v["poses"] is not None:
        pts = np.stack([from_frame(pts[p], echo_frame(v["poses"][p, 0])) for p in range(len(pts))])
        frame = "world"
    vols = [lv_volumes_from_points(run.template, pts[p]) for p in range(len(pts))]
    seconds = time.perf_counter() - t0
    report: dict[str, Any] = {"lv_edv_ml": vols[0], "frame": frame, "epoch": run.epoch,
                              "seconds": seconds, "seconds_per_phase": seconds / len(pts)}
    if len(pts) == 2:
        report["lv_esv_ml"] = vols[1]
        report["ef"] = ejection_fraction(vols[0], vols[1])
    meshes = {PHASES[p]: template_mesh_with(run.template, pts[p]) for p in range(len(pts))}
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for ph, mesh in meshes.items():
        path = out / f"heart_{ph}.vtp"
        with atomic_path(path) as tmp:
            mesh.save(str(tmp), binary=True)
        files.append(str(path))
    report["files"] = files
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report
