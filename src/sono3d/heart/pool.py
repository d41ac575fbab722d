"""Worker processes for per-case jobs (cohort generation, correspondence) that fail loudly.

``multiprocessing.Pool`` waits forever for the result of a worker that was killed (by the
out-of-memory killer, or by hand); :class:`concurrent.futures.ProcessPoolExecutor` notices the death
and raises ``BrokenProcessPool``, which becomes one line saying that the work done so far is kept
and a rerun resumes it. Workers are *spawned* (no fork of a process that holds torch threads).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from sono3d.errors import SonoError

__all__ = ["run_in_workers"]


def run_in_workers(fn: Callable[[Any], Any], jobs: Iterable[Any], workers: int, what: str) -> Iterator[Any]:
    """``fn(job)`` for every job in ``workers`` spawned processes; results in completion order.

    Raises :class:`~sono3d.errors.SonoError` naming ``what`` when a worker process dies.
    """
    jobs = list(jobs)
    if not jobs:
        return
    try:
        with ProcessPoolExecutor(max_workers=min(int(workers), len(jobs)), mp_context=mp.get_context("spawn")) as ex:
            pending = {ex.submit(fn, job) for job in jobs}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
    except BrokenProcessPool:
        raise SonoError(f"{what}: a worker process died (killed, or out of memory); what was finished is kept, "
                        "and the same command resumes from there") from None
