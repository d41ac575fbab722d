"""Open report pages in headless Chromium (Playwright driving the system's ``chromium``).

Used by the browser tests and ``benchmarks/bench_report.py``; needs the ``playwright`` Python
package (the ``dev`` extra) and a Chromium binary (Debian's ``chromium`` package, or the path in
``SONO3D_CHROMIUM``). Playwright's own browser download is not used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM_FLAGS", "find_chromium", "why_unavailable", "headless_chromium", "LoadedPage", "open_page"]

# Headless on a machine without a screen, a GPU or a network: software WebGL (SwiftShader), and no
# background connections (they would be refused, many at a time).
CHROMIUM_FLAGS = (
    "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-quic", "--disable-dev-shm-usage",
)


def find_chromium() -> str | None:
    """The Chromium executable: ``$SONO3D_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on the PATH."""
    env = os.environ.get("SONO3D_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def why_unavailable() -> str | None:
    """``None`` when pages can be opened here, else the reason (for a test's skip message)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[dev]')"
    if find_chromium() is None:
        return "no Chromium found (apt-get install chromium, or set SONO3D_CHROMIUM)"
    return None


@contextlib.contextmanager
def headless_chromium(executable: str | None = None) -> Iterator[Any]:
    """A Playwright ``Browser`` on headless Chromium, closed on exit."""
    from playwright.sync_api import sync_playwright

    exe = executable or find_chromium()
    if exe is None:
        raise RuntimeError(why_unavailable() or "no Chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=list(CHROMIUM_FLAGS))
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class LoadedPage:
    """A report page opened and drawn: the Playwright ``page``, its first-screen time and its errors."""

    page: Any
    ready_ms: float
    console_errors: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.page.close()


def open_page(browser: Any, path: str | Path, width: int = 1280, height: int = 900,
              timeout_s: float = 60.0) -> LoadedPage:
    """Open ``path`` from ``file://`` and wait for the page's ready flag (plots on the first screen drawn).

    ``console_errors`` collects console messages of type ``error``, uncaught exceptions and the
    page's own list of plots that failed (``window.SONO3D.errors``).
    """
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"exception: {e}"))
    page.goto(Path(path).resolve().as_uri())
    page.wait_for_function("window.SONO3D && window.SONO3D.ready === true", timeout=timeout_s * 1000)
    ready = float(page.evaluate("window.SONO3D.readyMs"))
    errors.extend(f"plot: {e}" for e in page.evaluate("window.SONO3D.errors"))
    return LoadedPage(page, ready, errors)
