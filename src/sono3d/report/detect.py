"""Which verb wrote a result folder, told from its contents alone."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sono3d.errors import InputError

__all__ = ["Result", "KINDS", "detect", "find_file"]


@dataclass(frozen=True)
class Result:
    """A recognised result folder: its kind, its folder and its ``report.json`` (``{}`` when none)."""

    kind: str
    folder: Path
    report: dict[str, Any]


def _report(folder: Path) -> dict[str, Any] | None:
    path = folder / "report.json"
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _is_heart_predict(folder: Path, rep: dict[str, Any]) -> bool:
    # a prediction from stills has one phase of unknown timing: heart_still.vtp and lv_volume_ml
    return ("lv_edv_ml" in rep or "lv_volume_ml" in rep) and \
        any((folder / f"heart_{p}.vtp").is_file() for p in ("ed", "es", "still"))


def _is_heart_evaluate(folder: Path, rep: dict[str, Any]) -> bool:
    return "iou128" in rep and (folder / "cases.csv").is_file()


def _is_sweep_compare(folder: Path, rep: dict[str, Any]) -> bool:
    return isinstance(rep.get("compounding"), dict) and isinstance(rep.get("gaussians"), dict)


def _is_reconstruction(folder: Path, rep: dict[str, Any]) -> bool:
    return isinstance(rep.get("holdout"), dict) and (folder / "volume.nii.gz").is_file()


def _is_demo(folder: Path, rep: dict[str, Any]) -> bool:
    return _is_reconstruction(folder, rep) and isinstance(rep.get("baseline"), dict)


# Checked in this order (a demo folder is also a reconstruction folder). Each entry: kind, what it
# looks for (said in the error when nothing matches), test.
KINDS: tuple[tuple[str, str, Callable[[Path, dict[str, Any]], bool]], ...] = (
    ("heart predict", "heart_ed.vtp, heart_es.vtp or heart_still.vtp with report.json holding lv_edv_ml or "
     "lv_volume_ml", _is_heart_predict),
    ("heart evaluate", "cases.csv with report.json holding iou128", _is_heart_evaluate),
    ("sweep compare", "report.json holding compounding and gaussians records", _is_sweep_compare),
    ("demo", "volume.nii.gz with report.json holding holdout and baseline", _is_demo),
    ("sweep reconstruct", "volume.nii.gz with report.json holding holdout", _is_reconstruction),
)


def detect(folder: str | Path) -> Result:
    """Recognise the result in ``folder``.

    Raises
    ------
    InputError
        ``folder`` is not a folder, or holds none of the known results (the message lists what was
        looked for).
    """
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"{path}: no such result folder")
    rep = _report(path)
    if rep is not None:
        for kind, _, test in KINDS:
            if test(path, rep):
                return Result(kind, path, rep)
    looked = "; ".join(f"{kind}: {what}" for kind, what, _ in KINDS)
    if not (path / "report.json").is_file():
        found = "no report.json"
    elif rep is None:
        found = "report.json is not a readable JSON object"
    else:
        found = "its report.json is of none of these kinds"
    raise InputError(f"{path} holds no known result ({found}); looked for {looked}")


def find_file(folder: Path, ref: Any) -> Path | None:
    """A file that a report names: as written, relative to the result folder, or by its name inside it."""
    if not isinstance(ref, str) or not ref:
        return None
    p = Path(ref)
    for cand in (p, folder / p, folder / p.name):
        if cand.is_file():
            return cand
    return None
