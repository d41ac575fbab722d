"""Matplotlib set-up shared by sono3d's figures: the file-only backend and an atomic PNG write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sono3d.io.atomic import atomic_path

__all__ = ["pyplot", "save_png"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend: figures are only ever written to files, never shown.

    matplotlib is imported here, on first use, not when a viz module is imported (it is slow to load).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path, dpi: int = 100, **savefig: Any) -> Path:
    """Write ``fig`` to ``path`` as a PNG (temp file + rename: never half-written) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", **savefig)
    pyplot().close(fig)
    return Path(path)
