"""numba's runtime settings for the sweep kernels, in one place: the threading layer and thread counts.

numba's OpenMP layer keeps a worker spinning after each parallel region, where it competes with the
main thread and torch's own OpenMP pool for two cores: the plain ``workqueue`` layer made a 32-slice
forward+backward ~1.7x faster in wall time on the shared 2-core machine (same CPU time). Importing
this module selects it; that only applies if no parallel numba code ran yet, and an explicit
``NUMBA_THREADING_LAYER`` wins.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

__all__ = ["run_threads"]


def run_threads(threads: int, kernel: Callable[..., Any], *args: Any) -> Any:
    """Call a parallel kernel on ``threads`` threads, restoring the caller's setting."""
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(before)
