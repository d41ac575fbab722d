"""Heart cohorts on disk: the synthetic generator, case loading, and readers for real cohorts.

Layout of a generated cohort (``docs/heart_cohort.md``)::

    OUT_DIR/cohort.json            seed, image size, generator version, motion, phases, view options
    OUT_DIR/manifest.csv           id, shape, beat and placement parameters, edv_ml, esv_ml, ef,
                                   gls_pct, gcs_pct
    OUT_DIR/cases/<id>/ed.vtp      labelled heart surface at end-diastole (template vertex order)
    OUT_DIR/cases/<id>/es.vtp      ... at end-systole
    OUT_DIR/cases/<id>/lv_cavity_ed.vtp, lv_cavity_es.vtp   closed LV blood pools
    OUT_DIR/cases/<id>/views.npz   labels uint8 [2, 6, H, W], echo float32 [2, 6, H, W],
                                   poses [2, 6, 4, 4], view_names [6], probe/sector arrays
    OUT_DIR/cases/<id>/params.json the case's manifest row
    OUT_DIR/cases/<id>/beat.npz    with --phases N: one cycle's N phases (points, times, volumes)

Case ``i`` draws everything from ``np.random.default_rng([seed, i])``, so the files do not depend
on the number of workers or on interruptions. A case is written into a hidden temporary folder and
renamed into place when complete; a rerun skips complete cases and clears half-written ones.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import FileFormatError, InputError, reason
from sono3d.geometry.mesh import enclosed_volume_mm3, require_watertight
from sono3d.heart.pool import run_in_workers
from sono3d.heart.strain import global_circumferential_strain_pct
from sono3d.io import read_mesh, write_mesh
from sono3d.io.atomic import atomic_path
from sono3d.io.lock import writer_lock
from sono3d.io.meshes import check_mesh_points
from sono3d.io.npz import read_npz, write_npz
from sono3d.io.registry import lookup
from sono3d.io.testing import kill_point
from sono3d.phantoms.heart import heart_mesh, heart_phases, lv_cavity_mesh, sample_placement, sample_shape
from sono3d.phantoms.heart_motion import MOTIONS, physiological_beat, sample_beat
from sono3d.phantoms.lv_grid import global_longitudinal_strain_pct
from sono3d.simulate.echo_bmode import bmode_views
from sono3d.simulate.echo_views import ViewOptions, simulate_views
from sono3d.types import PHASES

__all__ = [
    "COHORT_FORMAT",
    "APPEARANCES",
    "GENERATOR_VERSION",
    "VIEWS_EXPECTED",
    "DEFORMATION_EXPECTED",
    "HeartCase",
    "CohortResult",
    "generate_case",
    "generate_cohort",
    "write_case",
    "load_case",
    "case_ids",
    "read_manifest",
    "read_labelled_mesh",
    "read_case_mesh",
    "read_vtk_cohort",
    "read_ghdheart",
    "read_cohort",
]

COHORT_FORMAT = "sono3d-heart-cohort"
# Version 2 adds gls_pct and gcs_pct to the manifest and the physiological beat (``motion``, ``phases`` in
# cohort.json); version-1 cohorts (affine beat, no strain columns) stay readable but are not resumed.
GENERATOR_VERSION = "parametric-heart-2"
READABLE_GENERATORS = ("parametric-heart-1", GENERATOR_VERSION)
# How the views' echo images are made: the paper's pseudo-echo, or physics B-mode.
APPEARANCES = ("pseudo", "bmode")
_MANIFEST_TAIL = ("edv_ml", "esv_ml", "ef", "gls_pct", "gcs_pct")
# What a case's .npz files hold, for the readers' messages (docs/heart_cohort.md).
VIEWS_EXPECTED = ".npz with 'echo' [P, 6, H, W] and 'poses' [P, 6, 4, 4]"
DEFORMATION_EXPECTED = ".npz with 'ed', 'es' [V, 3] and 'template_id', as sono3d heart correspond writes it"
BEAT_EXPECTED = ".npz of the case's beat, as sono3d heart cohort --phases writes it"
_GHD_FILES = {"LV.obj": 1, "RV.obj": 2, "LA.obj": 3, "RA.obj": 4}
_VTK_SUFFIXES = (".vtk", ".vtu", ".vtp")


@dataclass
class HeartCase:
    """One heart: its surfaces, closed LV cavities, views (if any) and parameters.

    Attributes
    ----------
    id : str
    ed, es : pyvista.PolyData or None
        Labelled surfaces (cell array ``elemTag``) at end-diastole and end-systole.
    lv_cavity_ed, lv_cavity_es : pyvista.PolyData or None
        Closed LV blood pools (watertight; volume by the divergence theorem).
    views : dict of arrays or None
        The contents of ``views.npz`` (``labels``, ``echo``, ``poses``, ``view_names``, ...).
    params : dict
        The manifest row (shape parameters, ``edv_ml``, ``esv_ml``, ``ef``), or what a reader knows.
    source : str
        Where the case came from.
    beat : dict of arrays or None
        The contents of ``beat.npz`` (one cycle: ``t``, ``points``, ``lv_volume_ml``, ``es_index``).
    """

    id: str
    ed: Any = None
    es: Any = None
    lv_cavity_ed: Any = None
    lv_cavity_es: Any = None
    views: dict[str, np.ndarray] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    beat: dict[str, np.ndarray] | None = None

    def lv_volumes_ml(self) -> tuple[float | None, float | None]:
        """EDV and ESV (mL) recomputed from the cavity meshes (``None`` where a cavity is missing)."""
        def vol(m: Any, what: str) -> float | None:
            if m is None:
                return None
            try:
                return enclosed_volume_mm3(m) / 1000.0
            except InputError:
                raise InputError(f"case {self.id}: {what} is not watertight") from None

        return vol(self.lv_cavity_ed, "LV cavity at ED"), vol(self.lv_cavity_es, "LV cavity at ES")


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------

def case_id(index: int) -> str:
    return f"{index:05d}"


def generate_case(seed: int, index: int, size: int = 128, options: Any = None, motion: str = "physiological",
                  phases: int = 0, appearance: str = "pseudo") -> dict[str, Any]:
    """Everything of case ``index`` of cohort ``seed``, in memory.

    ``motion``: ``"physiological"`` (:mod:`sono3d.phantoms.heart_motion`; its beat parameters come
    from ``default_rng([seed, index, 1])``, so shape, placement and views are those of the affine
    case) or ``"affine"``. ``phases``: with the physiological beat, the number of phases of one
    cycle to keep (0: none). ``appearance``: ``"pseudo"`` (the paper's pseudo-echo) or ``"bmode"``
    (physics B-mode, :mod:`sono3d.simulate.echo_bmode`, its settings and tissue seed drawn from
    ``default_rng([seed, index, 2])``, so hearts, views and labels are those of the pseudo case).

    Returns a dict with ``id``, ``row`` (manifest row), ``points`` ``{"ed", "es"}`` ([V, 3]
    float32-exact), ``landmarks``, ``views`` (see :func:`sono3d.simulate.echo_views.simulate_views`)
    and ``beat`` (``None``, or the cycle's ``t``, ``points``, ``lv_volume_ml``, ``es_index``).
    """
    if motion not in MOTIONS:
        raise InputError(f"motion must be one of {', '.join(MOTIONS)}, got {motion!r}")
    if phases and motion != "physiological":
        raise InputError("intermediate phases need the physiological beat (--motion physiological)")
    opt = options if options is not None else ViewOptions(size=size)
    rng = np.random.default_rng([int(seed), int(index)])
    shape = sample_shape(rng)
    placement = sample_placement(rng)
    beat_row: dict[str, Any] = {}
    cycle = None
    if motion == "physiological":
        params = sample_beat(np.random.default_rng([int(seed), int(index), 1]), shape)
        beat = physiological_beat(shape, placement, params, n_phases=int(phases))
        ed, es = beat.ed, beat.es
        beat_row = {**params.to_dict(), "beat_k_l": beat.k_l, "beat_k_r": beat.k_r0}
        if phases:
            cycle = {"t": beat.times, "points": np.stack([p.points for p in beat.phases]).astype(np.float32),
                     "lv_volume_ml": np.array([p.lv_volume_mm3 / 1000.0 for p in beat.phases]),
                     "es_index": np.array(beat.es_index)}
    else:
        both = heart_phases(shape, placement)
        ed, es = both["ed"], both["es"]
    views = simulate_views([ed.points, es.points], [ed.landmarks, es.landmarks], rng, opt)
    if appearance == "bmode":
        brng = np.random.default_rng([int(seed), int(index), 2])
        views["echo"] = bmode_views(views, int(brng.integers(2**62)), points=[ed.points, es.points], rng=brng)
    elif appearance != "pseudo":
        raise InputError(f"unknown view appearance '{appearance}' (known: {', '.join(APPEARANCES)})")
    edv, esv = ed.lv_volume_mm3 / 1000.0, es.lv_volume_mm3 / 1000.0
    row: dict[str, Any] = {"id": case_id(index)}
    row.update(shape.to_dict())
    if motion == "physiological":  # the realised shortening of the base towards the apex
        row["long_shortening"] = 1.0 - beat.k_l
    row.update(beat_row)
    row.update(placement.to_dict())
    row.update({"edv_ml": edv, "esv_ml": esv, "ef": (edv - esv) / edv,
                "gls_pct": global_longitudinal_strain_pct(ed.points, es.points),
                "gcs_pct": global_circumferential_strain_pct(ed.points, es.points)})
    return {"id": case_id(index), "row": row, "points": {"ed": ed.points, "es": es.points},
            "landmarks": {"ed": ed.landmarks, "es": es.landmarks}, "views": views, "beat": cycle}


def write_case(case_dir: Path, data: dict[str, Any]) -> None:
    """Write one generated case's files into ``case_dir`` (which must exist)."""
    for phase in PHASES:
        pts = data["points"][phase]
        # .vtp keeps the field arrays (part names, cavity faces) beside the points and labels
        write_mesh(case_dir / f"{phase}.vtp", heart_mesh(pts))
        write_mesh(case_dir / f"lv_cavity_{phase}.vtp", lv_cavity_mesh(pts))
    v = data["views"]
    names = sorted(data["landmarks"]["ed"])
    write_npz(case_dir / "views.npz", {**{k: np.asarray(a) for k, a in v.items()},
                                       "landmark_names": np.array(names),
                                       "landmarks": np.stack([np.stack([data["landmarks"][ph][k] for k in names])
                                                              for ph in PHASES])})
    if data.get("beat") is not None:
        write_npz(case_dir / "beat.npz", data["beat"])
    with atomic_path(case_dir / "params.json") as tmp:
        tmp.write_text(json.dumps(data["row"], indent=1) + "\n", encoding="utf-8")


def _cohort_meta(seed: int, size: int, options: Any, motion: str = "physiological", phases: int = 0,
                 appearance: str = "pseudo") -> dict[str, Any]:
    meta = {"format": COHORT_FORMAT, "generator": GENERATOR_VERSION, "seed": int(seed), "size": int(size),
            "motion": motion, "phases": int(phases),
            "views": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()}}
    if appearance != "pseudo":  # pseudo cohorts keep the cohort.json they always had
        meta["appearance"] = appearance
    return meta


def _check_or_claim(out_dir: Path, meta: dict[str, Any]) -> None:
    """Refuse a folder that holds something else; write ``cohort.json`` in a new one."""
    info = out_dir / "cohort.json"
    if info.is_file():
        try:
            old = json.loads(info.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise InputError(f"{out_dir}: cohort.json is unreadable; choose another output folder") from None
        keys = ("format", "generator", "seed", "size", "motion", "phases", "views", "appearance")
        if old.get("generator") != meta["generator"]:
            raise InputError(f"{out_dir} holds a cohort of generator {old.get('generator')} (this version writes "
                             f"{meta['generator']}); it stays readable but cannot be extended: choose another "
                             "output folder")
        if any(old.get(k) != meta.get(k) for k in keys):
            raise InputError(
                f"{out_dir} holds a different cohort (seed {old.get('seed')}, size {old.get('size')}, "
                f"motion {old.get('motion')}, phases {old.get('phases')}, "
                f"appearance {old.get('appearance', 'pseudo')}); choose another output folder"
            )
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir} is not empty and holds no heart cohort; choose another output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(info) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def _work(args: tuple[str, int, int, Any, str, int, str]) -> str:
    """Generate and write one case (a top-level function, so spawned workers can run it)."""
    out_dir, seed, index, options, motion, phases, appearance = args
    cases = Path(out_dir) / "cases"
    final = cases / case_id(index)
    if final.is_dir():
        return case_id(index)
    data = generate_case(seed, index, options.size, options, motion, phases, appearance)
    tmp = cases / f".tmp-{case_id(index)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        write_case(tmp, data)
        os.replace(tmp, final)
        kill_point("cohort-case")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return case_id(index)


@dataclass
class CohortResult:
    """What :func:`generate_cohort` did."""

    out_dir: Path
    n_cases: int
    generated: int
    skipped: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "n_cases": self.n_cases, "generated": self.generated,
                "skipped": self.skipped, "seconds": round(self.seconds, 3)}


def generate_cohort(out_dir: str | os.PathLike[str], n: int, seed: int = 0, size: int = 128, workers: int = 1,
                    options: Any = None, progress: bool = False, motion: str = "physiological",
                    phases: int = 0, appearance: str = "pseudo") -> CohortResult:
    """Generate (or resume) a synthetic cohort of ``n`` cases in ``out_dir``.

    Parameters
    ----------
    n : int
        Number of cases (ids ``00000`` to ``n-1``).
    seed : int
        Cohort seed; case ``i`` uses ``default_rng([seed, i])``.
    size : int
        View image size in pixels (square).
    workers : int
        Processes (``spawn``); 1 runs in this process.
    options : ViewOptions, optional
        View geometry; its ``size`` must equal ``size``.
    progress : bool
        Show a progress bar on stderr.
    motion : str
        ``"physiological"`` (default) or ``"affine"`` (the first generator's beat).
    phases : int
        Phases of one cycle written to each case's ``beat.npz`` (physiological beat; 0: none).
    appearance : str
        ``"pseudo"`` (default) or ``"bmode"`` (see :func:`generate_case`); recorded in ``cohort.json``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise InputError(f"the number of cases must be a positive integer, got {n}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers <= 0:
        raise InputError(f"the number of workers must be a positive integer, got {workers}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"the seed must be a non-negative integer, got {seed}")
    if motion not in MOTIONS:
        raise InputError(f"motion must be one of {', '.join(MOTIONS)}, got {motion!r}")
    if isinstance(phases, bool) or not isinstance(phases, (int, np.integer)) or phases < 0 or phases == 1:
        raise InputError(f"phases must be 0 (none) or at least 2, got {phases}")
    if phases and motion != "physiological":
        raise InputError("intermediate phases need the physiological beat (motion 'physiological')")
    if appearance not in APPEARANCES:
        raise InputError(f"unknown view appearance '{appearance}' (known: {', '.join(APPEARANCES)})")
    opt = options if options is not None else ViewOptions(size=int(size))
    if opt.size != size:
        raise InputError(f"view options have size {opt.size} but the cohort size is {size}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    with writer_lock(out, "cohort folder"):
        return _generate(out, int(n), int(seed), int(size), int(workers), opt, progress, motion, int(phases),
                         appearance)


def _generate(out: Path, n: int, seed: int, size: int, workers: int, opt: Any, progress: bool, motion: str,
              phases: int, appearance: str) -> CohortResult:
    """:func:`generate_cohort` once its arguments are checked and the folder is locked."""
    _check_or_claim(out, _cohort_meta(seed, size, opt, motion, phases, appearance))
    cases = out / "cases"
    cases.mkdir(exist_ok=True)
    for stale in cases.glob(".tmp-*"):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    todo = [i for i in range(int(n)) if not (cases / case_id(i)).is_dir()]
    t0 = time.perf_counter()
    jobs = [(str(out), int(seed), i, opt, motion, int(phases), appearance) for i in todo]
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="case", desc="heart cohort")
    if workers == 1 or len(todo) <= 1:
        for job in jobs:
            _work(job)
            if bar is not None:
                bar.update(1)
    else:
        for _ in run_in_workers(_work, jobs, workers, f"{out}: generating the cohort"):
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    write_manifest(out)
    return CohortResult(out, len(case_ids(out)), len(todo), int(n) - len(todo), time.perf_counter() - t0)


def case_ids(cohort_dir: str | os.PathLike[str]) -> list[str]:
    """Ids of the complete cases of a generated cohort, sorted."""
    cases = Path(cohort_dir) / "cases"
    if not cases.is_dir():
        return []
    return sorted(p.name for p in cases.iterdir() if p.is_dir() and not p.name.startswith("."))


def write_manifest(cohort_dir: str | os.PathLike[str]) -> Path:
    """(Re)write ``manifest.csv`` from the complete cases' ``params.json``."""
    out = Path(cohort_dir)
    rows = []
    for cid in case_ids(out):
        try:
            rows.append(json.loads((out / "cases" / cid / "params.json").read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            raise FileFormatError(f"{out / 'cases' / cid}: params.json is missing or corrupt") from None
    path = out / "manifest.csv"
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            if rows:
                cols = list(rows[0])
                tail = [c for c in _MANIFEST_TAIL if c in cols]  # a version-1 cohort has no strain columns
                cols = ["id"] + [c for c in cols if c not in ("id",) + _MANIFEST_TAIL] + tail
                w = csv.DictWriter(fh, fieldnames=cols)
                w.writeheader()
                for r in rows:
                    w.writerow({k: (repr(float(v)) if isinstance(v, float) else v) for k, v in r.items()})
    return path


def read_manifest(cohort_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of ``manifest.csv`` with numbers parsed."""
    path = Path(cohort_dir) / "manifest.csv"
    if not path.is_file():
        raise InputError(f"{cohort_dir}: no manifest.csv (not a generated heart cohort?)")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (v if k == "id" else float(v)) for k, v in r.items()} for r in rows]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def read_case_mesh(path: str | os.PathLike[str]) -> Any:
    """A case's surface file (``.vtp``, with its field arrays) as PyVista ``PolyData``.

    Raises :class:`FileFormatError` for a file VTK cannot read, an empty mesh or a NaN/infinite vertex.
    """
    import pyvista as pv

    try:
        mesh = pv.read(str(path))
    except Exception as exc:  # noqa: BLE001 - VTK raises many types for corrupt files
        raise FileFormatError(f"{path}: cannot read mesh ({reason(exc)})") from None
    check_mesh_points(mesh, path)
    return mesh


def load_case(cohort_dir: str | os.PathLike[str], case: str | int, views: bool = True) -> HeartCase:
    """Load one case of a generated cohort (or a folder in the same layout).

    Raises :class:`InputError` for an unknown id, a surface without ``elemTag``, or an LV cavity that
    is not watertight.
    """
    cid = case_id(case) if isinstance(case, (int, np.integer)) else str(case)
    d = Path(cohort_dir) / "cases" / cid
    if not d.is_dir():
        raise InputError(f"{cohort_dir}: no complete case '{cid}'")
    out = HeartCase(id=cid, source=str(d))
    for phase in PHASES:
        p = d / f"{phase}.vtp"
        if p.is_file():
            m = read_case_mesh(p)
            if "elemTag" not in m.cell_data:
                raise InputError(f"{p}: mesh has no elemTag labels")
            setattr(out, phase, m)
        c = d / f"lv_cavity_{phase}.vtp"
        if c.is_file():
            cav = read_case_mesh(c)
            require_watertight(cav, f"{c} (LV cavity)")
            setattr(out, f"lv_cavity_{phase}", cav)
    if out.ed is None:
        raise InputError(f"{d}: case has no ed.vtp")
    if views and (d / "views.npz").is_file():
        out.views = read_npz(d / "views.npz", VIEWS_EXPECTED, "views")
    if views and (d / "beat.npz").is_file():
        out.beat = read_npz(d / "beat.npz", BEAT_EXPECTED, "beat")
    if (d / "params.json").is_file():
        out.params = json.loads((d / "params.json").read_text(encoding="utf-8"))
    return out


# --------------------------------------------------------------------------------------------
# Real cohorts
# --------------------------------------------------------------------------------------------

def read_labelled_mesh(path: str | os.PathLike[str], label: str = "elemTag") -> Any:
    """A labelled heart surface from a VTK file (the public cohort's format).

    Volumetric meshes (tetrahedra with a cell label) become the union of each label region's closed
    boundary surface, so interfaces between labels are kept; surfaces are read as they are. The
    result is a triangulated ``PolyData`` with the cell array ``elemTag``.
    """
    import pyvista as pv

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if p.suffix.lower() != ".vtu":  # VTK's unstructured grids are heart meshes the registry does not list
        lookup(p, "mesh")  # a volume or an image, which pyvista would read too, is not a heart
    try:
        grid = pv.read(str(p))
    except Exception as exc:  # noqa: BLE001
        raise FileFormatError(f"{p}: cannot read mesh ({reason(exc)})") from None
    if grid.n_points == 0 or grid.n_cells == 0:
        raise FileFormatError(f"{p}: mesh is empty")
    check_mesh_points(grid, p)
    if label not in grid.cell_data:
        if label in grid.point_data:
            grid = grid.point_data_to_cell_data()
            grid.cell_data[label] = np.rint(np.asarray(grid.cell_data[label])).astype(np.int32)
        else:
            raise InputError(f"{p}: mesh has no '{label}' labels (a cell array naming each region)")
    tags = np.asarray(grid.cell_data[label]).astype(np.int32)
    if isinstance(grid, pv.PolyData):
        surf = grid.triangulate()
        surf.cell_data["elemTag"] = np.asarray(surf.cell_data[label]).astype(np.int32)
        return surf
    pieces = []
    for v in np.unique(tags):
        sub = grid.extract_cells(np.flatnonzero(tags == v))
        sub = sub.extract_surface(algorithm="dataset_surface").triangulate()
        sub.cell_data.clear()
        sub.point_data.clear()
        sub.cell_data["elemTag"] = np.full(sub.n_cells, int(v), dtype=np.int32)
        pieces.append(sub)
    surf = pieces[0].merge(pieces[1:], merge_points=False) if len(pieces) > 1 else pieces[0]
    if not isinstance(surf, pv.PolyData):
        surf = surf.extract_surface()
    return surf


def read_vtk_cohort(folder: str | os.PathLike[str], label: str = "elemTag") -> list[HeartCase]:
    """Cases from a folder of labelled VTK meshes (one end-diastolic heart per file; no views)."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"{d}: no such folder")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in _VTK_SUFFIXES)
    if not files:
        raise InputError(f"{d}: no .vtk/.vtu/.vtp meshes")
    return [HeartCase(id=p.stem, ed=read_labelled_mesh(p, label), source=str(p)) for p in files]


def read_ghdheart(folder: str | os.PathLike[str], case: str = "ghdheart", scale: float = 100.0) -> HeartCase:
    """The GHDHeart four-chamber surfaces (``LV.obj RV.obj LA.obj RA.obj``; coordinates x 100 = mm).

    ``LV.obj`` is the LV *myocardium*: one closed cup-shaped surface whose inner wall is the
    endocardium and outer wall the epicardium (its centroid lies outside the closed surface, in the
    cavity). Its enclosed volume (about 115 mL) is therefore the myocardial volume, not the EDV, and
    no closed LV cavity can be read from it (``lv_cavity_ed`` is ``None``). ``RV``, ``LA`` and ``RA``
    are single-walled blood pools. Tags: LV 1, RV 2, LA 3, RA 4. Raises :class:`InputError` when a
    file is missing or the LV surface is not watertight.
    """
    import pyvista as pv

    d = Path(folder)
    missing = [n for n in _GHD_FILES if not (d / n).is_file()]
    if missing:
        raise InputError(f"{d}: not a GHDHeart folder (missing {', '.join(missing)})")
    pieces = []
    myocardium_ml = 0.0
    for name, tag in _GHD_FILES.items():
        m = read_mesh(d / name, scale=scale).triangulate()
        m.clear_data()
        m.cell_data["elemTag"] = np.full(m.n_cells, tag, dtype=np.int32)
        m.point_data["elemTag"] = np.full(m.n_points, tag, dtype=np.int32)
        if tag == 1:
            require_watertight(m, f"{d / name} (LV myocardium)")
            myocardium_ml = enclosed_volume_mm3(m) / 1000.0
        pieces.append(m)
    heart = pieces[0].merge(pieces[1:], merge_points=False)
    if not isinstance(heart, pv.PolyData):
        heart = heart.extract_surface(algorithm="dataset_surface")
    return HeartCase(id=case, ed=heart, lv_cavity_ed=None, params={"lv_myocardium_ml": myocardium_ml},
                     source=str(d))


def read_cohort(path: str | os.PathLike[str]) -> list[HeartCase]:
    """Every case of a cohort folder: generated (``cohort.json``), GHDHeart, or labelled VTK meshes."""
    d = Path(path)
    if not d.is_dir():
        raise InputError(f"{d}: no such folder")
    if (d / "cohort.json").is_file():
        return [load_case(d, cid) for cid in case_ids(d)]
    if all((d / n).is_file() for n in _GHD_FILES):
        return [read_ghdheart(d)]
    return read_vtk_cohort(d)
