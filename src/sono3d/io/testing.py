"""A test hook: die at a named moment, as a power cut or the out-of-memory killer would.

``SONO3D_TEST_KILL_AT=<stage>[:<n>]`` makes the process send itself ``SIGKILL`` the ``n``-th time
(default: the first) it reaches :func:`kill_point` ``(stage)``. The reliability tests use it to
interrupt a verb at a chosen moment and check that a rerun completes and equals an uninterrupted
run. Unset (always, outside those tests) it costs one dictionary lookup.

Stages: ``atomic-rename`` (a file is complete under its temporary name, not yet renamed into place),
``cohort-case`` (a heart case is in place), ``correspond-case`` (a case's deformation.npz is
written), ``train-step`` (an optimiser step is done), ``train-epoch`` (an epoch's checkpoint is
written; both in heart and style training).
"""

from __future__ import annotations

import os
import signal

__all__ = ["KILL_ENV", "kill_point"]

KILL_ENV = "SONO3D_TEST_KILL_AT"

_reached: dict[str, int] = {}


def kill_point(stage: str) -> None:
    """SIGKILL this process if ``$SONO3D_TEST_KILL_AT`` names ``stage`` and this is its ``n``-th visit."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    name, _, count = spec.partition(":")
    if name != stage:
        return
    _reached[stage] = _reached.get(stage, 0) + 1
    if _reached[stage] >= (int(count) if count else 1):
        os.kill(os.getpid(), signal.SIGKILL)
