"""A phantom on disk: one folder with its volumes, its surface and a small JSON description.

Layout (written by ``sono3d phantom uterus``)::

    labels.nii.gz      the sweep paper's label volume (exterior 0, interior 0.5, border 1)
    bmode.nii.gz       B-mode-like echogenicity per structure, [0, 1]
    structures.nii.gz  integer structure labels (see phantom.json "labels")
    surface.vtp        labelled closed surfaces (cell array "labels")
    phantom.json       parameters, landmarks (probe tip and aim), label names, echogenicities
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import InputError
from sono3d.io import read_mesh, read_volume, write_mesh, write_volume
from sono3d.io.atomic import atomic_path
from sono3d.phantoms.uterus import ECHOGENICITY, Phantom, UterusParams

__all__ = ["PHANTOM_FILES", "save_phantom", "load_phantom"]

PHANTOM_FILES: dict[str, str] = {
    "labels": "labels.nii.gz",
    "bmode": "bmode.nii.gz",
    "structures": "structures.nii.gz",
    "surface": "surface.vtp",
    "json": "phantom.json",
}

# What a folder must hold for a sweep to be simulated from it.
_REQUIRED = ("labels", "bmode", "json")


def save_phantom(phantom: Phantom, out_dir: str | Path) -> dict[str, Path]:
    """Write a phantom's files into ``out_dir`` (created if needed); returns ``{kind: path}``.

    Every file is written atomically; the JSON description goes last, so a folder with a
    ``phantom.json`` is complete.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["labels"] = write_volume(out / PHANTOM_FILES["labels"], phantom.labels)
    paths["bmode"] = write_volume(out / PHANTOM_FILES["bmode"], phantom.echogenicity)
    if phantom.structures is not None:
        paths["structures"] = write_volume(out / PHANTOM_FILES["structures"], phantom.structures)
    if phantom.mesh is not None and phantom.mesh.n_points:
        paths["surface"] = write_mesh(out / PHANTOM_FILES["surface"], phantom.mesh)
    desc = phantom.metadata()
    desc["files"] = {k: p.name for k, p in paths.items()}
    path = out / PHANTOM_FILES["json"]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(desc, indent=1) + "\n")
    paths["json"] = path
    return {k: Path(v) for k, v in paths.items()}


def load_phantom(folder: str | Path, mesh: bool = False) -> Phantom:
    """Read a phantom folder written by :func:`save_phantom`.

    Raises :class:`InputError` naming the missing files when the folder is not a phantom.
    """
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"{d}: not a phantom folder (it does not exist or is not a folder)")
    missing = [PHANTOM_FILES[k] for k in _REQUIRED if not (d / PHANTOM_FILES[k]).is_file()]
    if missing:
        raise InputError(f"{d}: not a phantom folder, missing {', '.join(missing)} "
                         "(make one with 'sono3d phantom uterus')")
    try:
        desc: dict[str, Any] = json.loads((d / PHANTOM_FILES["json"]).read_text())
        params = UterusParams.from_dict(desc["params"])
        landmarks = {k: np.asarray(v, dtype=np.float64) for k, v in desc.get("landmarks", {}).items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{d / PHANTOM_FILES['json']}: invalid phantom description ({exc})") from None
    labels = read_volume(d / PHANTOM_FILES["labels"])
    echo = read_volume(d / PHANTOM_FILES["bmode"])
    structures = read_volume(d / PHANTOM_FILES["structures"]) if (d / PHANTOM_FILES["structures"]).is_file() else None
    surface = read_mesh(d / PHANTOM_FILES["surface"]) if mesh and (d / PHANTOM_FILES["surface"]).is_file() else None
    return Phantom(
        labels=labels, structures=structures, echogenicity=echo, mesh=surface, params=params,
        landmarks=landmarks, border_mm=float(desc.get("border_mm", 1.0)),
        echo_background=float(desc.get("echogenicity", ECHOGENICITY).get("background", ECHOGENICITY["background"])),
    )
