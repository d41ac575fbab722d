"""Shared test fixtures: paths to the real files in ../shared/data, skipped cleanly when absent."""

from __future__ import annotations

import os
from pathlib import Path

# pytest-xdist runs one worker per core (`-n 2` on the 2-core machines): each worker's torch gets its
# share of the cores. Two workers of two OpenMP threads each oversubscribe the machine, and OpenMP's
# spin-waiting then made a 60-step training test take 50-290 s instead of 8. Set before torch loads,
# so the subprocesses the tests start inherit it; an explicit OMP_NUM_THREADS wins.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

import numpy as np
import pytest

from sono3d.io import write_mesh
from sono3d.phantoms.heart import HeartShape, Placement, heart_topology
from sono3d.phantoms.heart_motion import BeatParams, physiological_beat

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SONO3D_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real test files; skips the test when it is not beside the checkout."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (a fresh clone has no ../shared)")
    return SHARED_DATA


def shared_file(relative: str) -> Path:
    """One file under ``../shared/data``; skips the test when it is absent."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"real test file not found: {path}")
    return path


def one_line_error(result, *words: str) -> str:
    """Assert a CLI result failed as users must see it: exit code 2, one ``error:`` line naming
    ``words``, no traceback. Returns that line."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def snapshot(*paths: Path) -> dict[Path, bytes | None]:
    """The bytes of each existing file among ``paths`` (recursively for folders), to check later that
    a refused run did not change them."""
    out: dict[Path, bytes | None] = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            out[f] = f.read_bytes() if f.is_file() else None
    return out


def refused(result, *words: str, absent: tuple[Path, ...] = (), unchanged: dict[Path, bytes | None] | None = None
            ) -> str:
    """Assert a CLI run was refused as sono3d refuses bad input: exit code 2, ONE line
    ``error: ...`` naming ``words`` (the file or option), no traceback; nothing under the final names
    ``absent`` (nor a temporary file of an atomic write beside them); every file of ``unchanged``
    (from :func:`snapshot`) as it was. Returns the error line."""
    line = one_line_error(result, *words)
    for path in absent:
        assert not path.exists(), f"{path} was written"
        if path.parent.is_dir():
            temps = [p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.") and ".tmp" in p.name]
            assert not temps, temps
    for path, data in (unchanged or {}).items():
        now = path.read_bytes() if path.is_file() else None
        assert now == data, f"{path} was changed"
    return line


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# ------------------------------------------------------------------ a synthetic real beat (heart fit-real)

def open_endocardium() -> tuple[np.ndarray, np.ndarray]:
    """Template endocardium faces without the base cap (endocardial vertex order), and the cap's."""
    topo = heart_topology()
    remap = np.full(topo.n_points, -1, dtype=np.int64)
    remap[topo.lv_endo_points] = np.arange(len(topo.lv_endo_points))
    f = remap[topo.lv_cavity_faces]
    ring = np.arange(len(topo.lv_endo_points) - 40, len(topo.lv_endo_points))
    cap = np.isin(f, ring).all(axis=1)
    return f[~cap], f[cap]


def polydata(points: np.ndarray, faces: np.ndarray):  # noqa: ANN201
    """A triangle ``pyvista.PolyData`` of ``points`` [N, 3] and ``faces`` [F, 3]."""
    import pyvista as pv

    return pv.PolyData(np.asarray(points, dtype=np.float64), np.hstack([np.full((len(faces), 1), 3), faces]).ravel())


def write_lv_beat(folder: Path, n_phases: int = 2) -> np.ndarray:
    """A biv-me-named LV-only beat (open at the base) made from a physiological heart, written to
    ``folder``; returns its LV volumes (mL)."""
    topo = heart_topology()
    beat = physiological_beat(HeartShape(lv_length_mm=90.0), Placement((4.0, 2.0, -3.0), (20.0, -30.0, 45.0), 1.1),
                              BeatParams(gls_pct=-18.0), n_phases=n_phases if n_phases > 2 else 0)
    phases = beat.phases if n_phases > 2 else [beat.ed, beat.es]
    open_f, _ = open_endocardium()
    folder.mkdir(parents=True, exist_ok=True)
    vols = []
    for k, ph in enumerate(phases):
        write_mesh(folder / f"case_LV_ENDOCARDIAL_{k:03d}.vtk", polydata(ph.points[topo.lv_endo_points], open_f))
        vols.append(ph.lv_volume_mm3 / 1000.0)
    return np.array(vols)
