"""One self-contained HTML page per result folder, read from the result's files only.

``sono3d report RESULT_DIR [OUT.html]`` (and every verb that writes a result, unless ``--no-html``)
calls :func:`build_report`. The folder's kind is told from its contents
(:func:`sono3d.report.detect.detect`); the page is built on plotly.js, which the page embeds (see
``docs/report.md``). This package sits beside the engines: it reads their output files (through
:mod:`sono3d.io`, JSON and NumPy) and never imports ``sono3d.heart``, ``sono3d.sweep`` or
``sono3d.style``.
"""

from __future__ import annotations

from pathlib import Path

from sono3d.report.data import MAX_VOXELS
from sono3d.report.detect import KINDS, Result, detect
from sono3d.report.heart_pages import heart_page
from sono3d.report.sweep_pages import sweep_page

__all__ = ["build_report", "detect", "KINDS", "Result", "MAX_VOXELS"]


def build_report(result_dir: str | Path, out: str | Path | None = None, *, views: str | Path | None = None,
                 truth: str | Path | None = None, max_voxels: int = MAX_VOXELS) -> Path:
    """Write the HTML page of a result folder and return its path.

    Parameters
    ----------
    result_dir : path-like
        A folder written by ``heart predict``, ``heart evaluate``, ``sweep reconstruct``,
        ``sweep compare`` or ``demo``.
    out : path-like, optional
        The page (default ``RESULT_DIR/report.html``); written atomically.
    views : path-like, optional
        Heart predictions: the ``views.npz`` that was predicted from (default: the report's
        ``views`` record, if any), for the input views on the page.
    truth : path-like, optional
        Sweep reconstructions: the ground-truth volume (default: the report's ``truth`` record, else
        ``truth.nii.gz`` in the folder).
    max_voxels : int
        Volumes with more voxels are shown downsampled, with a note on the page.

    Raises
    ------
    InputError
        The folder holds no known result, or one of its files cannot be read.
    """
    res = detect(result_dir)
    if res.kind.startswith("heart"):
        page = heart_page(res, views=views)
    else:
        page = sweep_page(res, truth=truth, max_voxels=max_voxels)
    return page.write(Path(out) if out is not None else res.folder / "report.html")
