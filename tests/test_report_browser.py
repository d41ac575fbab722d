"""Report pages in a real browser: headless Chromium opens each kind of page from ``file://``.

Each page must draw without a console error, its 3D view must hold drawn pixels, a slider must move
what it controls (the pixels change), and a screenshot is written: the whole page to
``$SONO3D_SCREENSHOTS`` when set (for looking at), else the first screen to a temporary folder.
Skipped, with the reason, where Playwright or Chromium is missing (``make test`` installs Debian's
``chromium`` when it can).

Speed: software WebGL on two cores is slow. The module launches Chromium once, its tests run on
one pytest-xdist worker (``xdist_group``; the suite runs with ``--dist loadgroup``), each test
builds only its own page, and the whole-page screenshot (a second rendering of every plot) is
taken only when ``$SONO3D_SCREENSHOTS`` asks for it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sono3d.report import build_report
from sono3d.report.browser import LoadedPage, headless_chromium, open_page, why_unavailable

from report_results import compare_result, heart_evaluate_result, heart_predict_result, sweep_result

pytestmark = [pytest.mark.skipif(why_unavailable() is not None, reason=str(why_unavailable())),
              pytest.mark.xdist_group("browser")]

VIEWPORT = (1024, 720)  # fewer pixels for software WebGL than a laptop screen


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the whole module."""
    with headless_chromium() as b:
        page = b.new_page()
        webgl = page.evaluate("!!document.createElement('canvas').getContext('webgl')")
        page.close()
        if not webgl:
            pytest.skip("this Chromium has no WebGL (software rendering unavailable)")
        yield b


def _build(kind: str, root: Path) -> Path:
    if kind == "sweep-reconstruct":
        return build_report(sweep_result(root / "recon"))
    if kind == "demo":
        return build_report(sweep_result(root / "demo", demo=True))
    if kind == "sweep-compare":
        return build_report(compare_result(root / "compare"))
    if kind == "heart-predict":
        pred, views = heart_predict_result(root / "pred", {"per_view": [0.2] * 6, "score": 0.2,
                                                            "in_distribution": True, "view_order_ok": True})
        return build_report(pred, views=views)
    return build_report(heart_evaluate_result(root / "eval"))


@pytest.fixture
def report(browser, tmp_path):
    """``report(kind, before_drawing=None)``: build that kind of page, open it in a new tab and draw all
    of it; the tab is closed after the test."""
    opened: list[LoadedPage] = []

    def open_report(kind: str, before_drawing: Callable | None = None) -> LoadedPage:
        loaded = open_page(browser, _build(kind, tmp_path), *VIEWPORT)
        opened.append(loaded)
        if before_drawing is not None:  # plots below the first screen are not drawn yet
            before_drawing(loaded.page)
        loaded.page.evaluate("window.SONO3D.drawAll()")
        _settle(loaded.page)
        return loaded

    yield open_report
    for loaded in opened:
        loaded.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> tuple[Path, bool]:
    """Where screenshots go, and whether whole pages are wanted (only when someone will look)."""
    wanted = os.environ.get("SONO3D_SCREENSHOTS")
    folder = Path(wanted or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder, bool(wanted)


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def _coloured_fraction(img: np.ndarray) -> float:
    """Share of clearly coloured pixels (surfaces, points), as opposed to white, grey and black."""
    return float(((img.max(axis=2) - img.min(axis=2)) > 60).mean())


def _changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a - b).max(axis=2) > 30).mean())


def _settle(page) -> None:  # noqa: ANN001
    """Let pending redraws (one per animation frame) reach the screen."""
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.wait_for_timeout(150)


def _finish(loaded: LoadedPage, shots: tuple[Path, bool], name: str) -> None:
    folder, full_page = shots
    out = folder / f"{name}.png"
    loaded.page.screenshot(path=str(out), full_page=full_page)
    assert out.stat().st_size > 20_000
    errors = loaded.console_errors + [f"plot: {e}" for e in loaded.page.evaluate("window.SONO3D.errors")]
    assert errors == [], errors


def _slider(page, selector: str, value: int) -> None:  # noqa: ANN001
    page.locator(selector).fill(str(value))
    _settle(page)


@pytest.mark.parametrize("kind", ["sweep-reconstruct", "demo", "sweep-compare"])
def test_sweep_pages_draw_and_the_slider_moves_the_slice(report, shots, kind):
    def move_coronal(page):  # noqa: ANN001 - a slider moved before its slices are drawn still counts
        rng = page.locator("input[id$='-coronal-range']").first
        rng.fill(str(int(rng.get_attribute("max")) // 3))

    loaded = report(kind, move_coronal)
    page = loaded.page
    label = page.locator("output[id$='-coronal-out']").first.text_content()
    moved = int(page.locator("input[id$='-coronal-range']").first.get_attribute("max")) // 3
    assert label.startswith(f"{moved} / "), label
    mm = float(label.split("(")[1].split()[0])
    lines = page.evaluate("document.querySelector(\"[id$='-axial']\").layout.shapes.map(s => s.y0)")
    assert any(abs(y - mm) < 1e-6 for y in lines), (label, lines)  # the axial view's crosshair follows it
    scene = page.locator(".scene3d").first
    before3d = _pixels(scene.screenshot())
    if kind != "sweep-compare":  # the compare folder holds no reconstruction surface to colour the view
        assert _coloured_fraction(before3d) > 0.005, "the 3D view shows no surface"
    assert (before3d.min(axis=2) < 100).mean() > 0.01, "the 3D view shows no slice planes"
    axial = page.locator("[id$='-axial']").first
    before = _pixels(axial.screenshot())
    label = page.locator("output[id$='-axial-out']").first.text_content()
    rng = page.locator("input[id$='-axial-range']").first
    _slider(page, "input[id$='-axial-range']", int(rng.get_attribute("max")) // 5)
    assert page.locator("output[id$='-axial-out']").first.text_content() != label
    assert _changed_fraction(before, _pixels(axial.screenshot())) > 0.005, "the slice did not change"
    assert _changed_fraction(before3d, _pixels(scene.screenshot())) > 0.002, "the 3D plane did not move"
    _finish(loaded, shots, kind)


def test_heart_page_draws_the_mesh_and_switches_ed_es(report, shots):
    loaded = report("heart-predict")
    page = loaded.page
    assert page.locator(".banner.ok").count() == 1
    scene = page.locator(".scene3d").first
    ed = _pixels(scene.screenshot())
    assert _coloured_fraction(ed) > 0.02, "the heart is not drawn"
    _slider(page, "input[id$='-range']", 1)
    es = _pixels(scene.screenshot())
    assert _changed_fraction(ed, es) > 0.005, "ED and ES look the same"
    # A click on a legend entry hides that part.
    page.locator(".legend .traces", has_text="RV").first.locator(".legendtoggle").click()
    page.wait_for_timeout(600)  # plotly waits out its double-click delay (300 ms) before a single click
    _settle(page)
    assert _changed_fraction(es, _pixels(scene.screenshot())) > 0.01, "hiding the RV changed nothing"
    assert page.locator("figure img").count() == 12
    _finish(loaded, shots, "heart-predict")


def test_evaluate_page_draws_and_sorts(report, shots):
    loaded = report("heart-evaluate")
    page = loaded.page
    assert page.locator(".plot .boxlayer .trace").count() == 4
    assert page.locator(".plot .scatterlayer .point").count() >= 16  # 8 cases, two methods
    table = page.locator("table.sortable").first
    col = table.locator("thead th", has_text="ef_true")
    cells = table.locator("tbody tr td:nth-child(6)")
    col.click()
    up = [float(t) for t in cells.all_text_contents()]
    col.click()
    down = [float(t) for t in cells.all_text_contents()]
    assert up == sorted(up) and down == sorted(up, reverse=True) and up != down
    _finish(loaded, shots, "heart-evaluate")
