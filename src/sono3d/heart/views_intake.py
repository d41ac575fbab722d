"""Recorded echo views to a ``views.npz`` in the cohort's format (``sono3d heart views``).

Each given view goes through :func:`sono3d.intake.intake_echo` with the cohort's geometry for that
view (:func:`cohort_geometry`), and the results are stacked the way the generated cohort stores its
views, plus what a recording adds:

=================  ======================  ==================================================
key                shape, dtype            meaning
=================  ======================  ==================================================
``echo``           [P, 6, S, S] float32    views in [0, 1]; P = 2 (ED, ES) when any view is a
                                           loop, else 1; a missing view is all zeros
``present``        [6] bool                which views were given
``coverage``       [6, S, S] bool          pixels that hold image data (inside both fans)
``frames``         [P, 6] int64            source frame used per phase and view (-1: missing)
``phase_names``    [P] str                 ``ed``, ``es`` (a loop) or ``still``
``view_names``     [6] str                 :data:`sono3d.simulate.echo_views.VIEW_NAMES`
``opening_deg``    [6] float64             target fan per view (the cohort's mean opening)
``depth_mm``       [6] float64             target depth per view
``spacing_mm``     [6] float64             target pixel size per view
``source``         [6] str                 one JSON record per view (file, frames, sector
                                           found, pixel size and its source, warnings); ``{}``
                                           for a missing view
``format``         [] str                  :data:`VIEWS_FORMAT`
=================  ======================  ==================================================

There is no ``poses`` array: a recording's planes are unknown (the view-plane regressor of a later
step estimates them). Every array is plain numbers or unicode, so ``np.load(...,
allow_pickle=False)`` reads the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import InputError, SonoError
from sono3d.intake import DEFAULT_DEPTH_MM, EchoIntake, ViewGeometry, intake_echo, source_kind
from sono3d.io.atomic import atomic_path
from sono3d.simulate.echo_views import VIEW_NAMES, ViewOptions
from sono3d.viz.echo_intake import IntakePanel, intake_figure

__all__ = ["VIEWS_FORMAT", "ViewsIntake", "cohort_geometry", "intake_views", "views_arrays", "write_views",
           "parse_depths"]

VIEWS_FORMAT = "sono3d-echo-views-1"
_APICAL = ("a4c", "a2c", "a3c")


def cohort_geometry(view: str, options: ViewOptions | None = None) -> ViewGeometry:
    """The cohort's geometry of one view: its field of view, depth, and the mean opening angle.

    The cohort draws each view's opening angle from ``options.opening_deg``; a recording is
    resampled into the middle of that range.
    """
    if view not in VIEW_NAMES:
        raise InputError(f"unknown view {view!r} (views: {', '.join(VIEW_NAMES)})")
    opt = options or ViewOptions()
    apical = view in _APICAL
    return ViewGeometry(size=int(opt.size), fov_mm=float(opt.apical_fov_mm if apical else opt.sax_fov_mm),
                        depth_mm=float(opt.apical_depth_mm if apical else opt.sax_depth_mm),
                        opening_deg=float(np.mean(opt.opening_deg)))


@dataclass
class ViewsIntake:
    """The six views after intake (missing ones absent from ``intakes``); ``geometries`` has all six."""

    intakes: dict[str, EchoIntake]
    geometries: dict[str, ViewGeometry]
    n_phases: int
    warnings: list[str] = field(default_factory=list)

    @property
    def present(self) -> np.ndarray:
        return np.array([v in self.intakes for v in VIEW_NAMES])

    def phase_names(self) -> list[str]:
        return ["ed", "es"] if self.n_phases == 2 else ["still"]


def parse_depths(text: str | None) -> dict[str, float] | float | None:
    """``--depth-mm``: one depth for every view (``150``) or per view (``a4c=150,a2c=190``)."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    if "=" not in text:
        return _positive(_number(text, text), "--depth-mm")
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip().replace("-", "_")
        if name not in VIEW_NAMES:
            raise InputError(f"--depth-mm: unknown view {name!r} (views: {', '.join(VIEW_NAMES)})")
        out[name] = _positive(_number(value, text), f"--depth-mm {name}")
    return out


def _number(value: str, text: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InputError(f"--depth-mm must be a depth in mm (150) or per view (a4c=150,a2c=190), got {text!r}") from None


def _positive(v: float, what: str) -> float:
    if not (np.isfinite(v) and v > 0):
        raise InputError(f"{what} must be a positive number of mm, got {v:g}")
    return v


def _check_paths(paths: dict[str, str | os.PathLike[str] | None]) -> dict[str, Path]:
    given = {v: Path(p) for v, p in paths.items() if p is not None}
    unknown = [v for v in given if v not in VIEW_NAMES]
    if unknown:
        raise InputError(f"unknown view {unknown[0]!r} (views: {', '.join(VIEW_NAMES)})")
    if not given:
        raise InputError("no views given: pass at least one of " + ", ".join(f"--{v.replace('_', '-')}" for v in VIEW_NAMES))
    seen: dict[Path, str] = {}
    for v in VIEW_NAMES:
        if v not in given:
            continue
        p = given[v]
        try:
            source_kind(p)
        except SonoError as exc:
            raise type(exc)(f"{v}: {exc}") from None
        key = p.resolve()
        if key in seen:
            raise InputError(f"{v}: {p} is the same file as {seen[key]}; each view needs its own recording")
        seen[key] = v
    return given


def intake_views(paths: dict[str, str | os.PathLike[str] | None], options: ViewOptions | None = None,
                 depth_mm: float | dict[str, float] | None = None, ed_frame: int | None = None,
                 es_frame: int | None = None, mirror: bool = False,
                 default_depth_mm: float = DEFAULT_DEPTH_MM, seed: int = 0) -> ViewsIntake:
    """Intake of any non-empty subset of the six views.

    Parameters
    ----------
    paths : dict
        View name (:data:`VIEW_NAMES`) to a recording (image, folder, video, DICOM, frames
        ``.npz``); ``None`` or absent for a missing view.
    options : ViewOptions, optional
        The cohort's view options (size, fields of view, depths, opening range).
    depth_mm : float or dict, optional
        Scanner depth for every view or per view (for files without a pixel size).
    ed_frame, es_frame : int, optional
        Frames to use in every loop.
    mirror : bool
        Mirror every view left-right.

    Raises
    ------
    InputError, FileFormatError
        One line naming the view and the file.
    """
    given = _check_paths(paths)
    geometries = {v: cohort_geometry(v, options) for v in VIEW_NAMES}
    intakes: dict[str, EchoIntake] = {}
    for v in VIEW_NAMES:
        if v not in given:
            continue
        d = depth_mm.get(v) if isinstance(depth_mm, dict) else depth_mm
        try:
            intakes[v] = intake_echo(given[v], geometries[v], depth_mm=d, ed_frame=ed_frame, es_frame=es_frame,
                                     mirror=mirror, default_depth_mm=default_depth_mm, seed=seed)
        except SonoError as exc:
            raise type(exc)(f"{v}: {exc}") from None
    n_phases = 2 if any(i.is_loop for i in intakes.values()) else 1
    warnings = [f"{v}: {w}" for v, i in intakes.items() for w in i.warnings]
    if n_phases == 2:
        warnings += [f"{v}: {i.path.name} is a still image: used for both ED and ES"
                     for v, i in intakes.items() if not i.is_loop]
    return ViewsIntake(intakes, geometries, n_phases, warnings)


def views_arrays(result: ViewsIntake) -> dict[str, np.ndarray]:
    """The arrays of ``views.npz`` (see the module notes)."""
    geos = [result.geometries[v] for v in VIEW_NAMES]
    S = geos[0].size
    P = result.n_phases
    echo = np.zeros((P, 6, S, S), dtype=np.float32)
    coverage = np.zeros((6, S, S), dtype=bool)
    frames = np.full((P, 6), -1, dtype=np.int64)
    source = []
    for j, v in enumerate(VIEW_NAMES):
        it = result.intakes.get(v)
        if it is None:
            source.append("{}")
            continue
        imgs = it.images()
        used = it.frames_used
        for p in range(P):
            k = min(p, len(imgs) - 1)
            echo[p, j] = imgs[k]
            frames[p, j] = used[k]
        coverage[j] = it.coverage
        source.append(json.dumps(it.record()))
    return {
        "echo": echo, "present": result.present, "coverage": coverage, "frames": frames,
        "phase_names": np.array(result.phase_names()), "view_names": np.array(VIEW_NAMES),
        "opening_deg": np.array([g.opening_deg for g in geos]),
        "depth_mm": np.array([g.depth_mm for g in geos]),
        "spacing_mm": np.array([g.pixel_mm for g in geos]),
        "source": np.array(source), "format": np.array(VIEWS_FORMAT),
    }


def _panel(view: str, it: EchoIntake) -> IntakePanel:
    f = it.fit
    title = (f"{view}: {it.path.name}\napex ({f.apex_px[0]:.0f}, {f.apex_px[1]:.0f}) px, {f.angle_deg:.0f}°, "
             f"depth {(f.radius_px[1] - f.radius_px[0]) * it.pixel_mm:.0f} mm ({it.pixel_source})")
    if it.colour_doppler:
        title += ", colour Doppler"
    labels = ([f"ED (frame {it.ed_frame})", f"ES (frame {it.es_frame})"] if it.is_loop else ["still"])
    marks = (it.ed_frame, it.es_frame) if it.is_loop else None
    return IntakePanel(title=title, source=it.source_frame, outline=f.outline(), views=it.images(), labels=labels,
                       areas=it.areas_mm2, marks=marks)


def write_views(out: str | os.PathLike[str], result: ViewsIntake, figure: bool = True) -> dict[str, Any]:
    """Write ``views.npz`` (and ``views.png`` beside it) atomically; returns a JSON-ready summary."""
    out = Path(out)
    if out.suffix.lower() != ".npz":
        raise InputError(f"{out}: the views file must end in .npz")
    arrays = views_arrays(result)
    files = [out] + ([out.with_suffix(".png")] if figure else [])
    # the arrays go to a temporary first and are renamed into place after the figure is written,
    # so a failure leaves neither file
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        if figure:
            intake_figure([_panel(v, result.intakes[v]) for v in VIEW_NAMES if v in result.intakes], files[1])
    summary: dict[str, Any] = {
        "files": [str(f) for f in files], "phases": result.phase_names(), "present": [v for v in VIEW_NAMES if v in result.intakes],
        "views": {v: {k: rec[k] for k in ("file", "frames", "frames_used", "pixel_mm", "pixel_source", "depth_mm",
                                            "coverage", "colour_doppler", "seconds")}
                  | {"sector": {k: rec["sector"][k] for k in ("apex_px", "angle_deg", "tilt_deg", "radius_px")}}
                  for v, it in result.intakes.items() for rec in [it.record()]},
    }
    return summary
