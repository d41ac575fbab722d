"""Shared test fixtures: paths to the real files in ../shared/data, skipped cleanly when absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

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


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
