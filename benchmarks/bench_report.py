"""report.html of the default demo: page size and time to interactive in headless Chromium.

* Builds the page of a demo folder (``--result DIR``, else runs the default ``sono3d demo`` into a
  temporary folder first) and times the build.
* Opens it from ``file://`` in headless Chromium (software WebGL) ``--repeats`` times, alternating
  with a baseline page that holds plotly.js and one bar chart (the floor any plotly page pays to
  parse plotly.js), and reports the medians of ``readyMs`` (navigation start to the first screen
  drawn and interactive), ``allMs`` (every plot on the page drawn, after ``SONO3D.drawAll()``),
  and their ratio to the baseline.
* Targets: page <= 15 MB, first screen interactive <= 3 s on the 2-core machine.

Prints a table, then ONE JSON line.

    .venv/bin/python benchmarks/bench_report.py [--result DEMO_DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from sono3d.demo import demo_comparison
from sono3d.report import build_report
from sono3d.report.browser import headless_chromium, open_page, why_unavailable
from sono3d.report.page import Page

TARGET_MB = 15.0
TARGET_READY_MS = 3000.0


def _baseline(folder: Path) -> Path:
    import plotly.graph_objects as go

    page = Page("baseline", "baseline", folder)
    page.figure(go.Figure(go.Bar(x=[1, 2, 3], y=[3, 1, 2])), height=300)
    return page.write(folder / "baseline.html")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--result", type=Path, help="A demo folder (default: run the default demo first).")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    reason = why_unavailable()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = args.result
        demo_s = None
        if folder is None:
            folder = root / "demo"
            t = time.perf_counter()
            demo_comparison(folder, progress=False)
            demo_s = time.perf_counter() - t
        t = time.perf_counter()
        page = build_report(folder, root / "report.html")
        build_s = time.perf_counter() - t
        size_mb = page.stat().st_size / 1e6
        base = _baseline(root)
        ready, full, floor = [], [], []
        if reason is None:
            with headless_chromium() as browser:
                for _ in range(args.repeats):
                    b = open_page(browser, base)
                    floor.append(b.ready_ms)
                    b.close()
                    p = open_page(browser, page)
                    ready.append(p.ready_ms)
                    p.page.evaluate("window.SONO3D.drawAll()")
                    full.append(float(p.page.evaluate("window.SONO3D.allMs")))
                    if p.console_errors:
                        raise SystemExit(f"console errors: {p.console_errors}")
                    p.close()
    med = statistics.median
    rows = [("page size", f"{size_mb:.2f} MB (target <= {TARGET_MB:.0f})"),
            ("page build (Python)", f"{build_s:.2f} s")]
    if demo_s is not None:
        rows.insert(0, ("default demo run", f"{demo_s:.1f} s"))
    if ready:
        rows += [("baseline: plotly.js + one bar chart", f"{med(floor):.0f} ms"),
                 ("first screen interactive (readyMs)", f"{med(ready):.0f} ms = {med(ready) / med(floor):.2f} x baseline "
                                                        f"(target <= {TARGET_READY_MS:.0f} ms)"),
                 ("every plot drawn (allMs)", f"{med(full):.0f} ms = {med(full) / med(floor):.2f} x baseline")]
    else:
        rows.append(("browser", f"skipped: {reason}"))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(json.dumps({"bench": "report", "size_mb": round(size_mb, 3), "build_s": round(build_s, 3),
                      "baseline_ms": med(floor) if floor else None, "ready_ms": med(ready) if ready else None,
                      "all_ms": med(full) if full else None,
                      "ready_ratio": round(med(ready) / med(floor), 3) if ready else None,
                      "repeats": args.repeats, "size_ok": size_mb <= TARGET_MB,
                      "ready_ok": (med(ready) <= TARGET_READY_MS) if ready else None}))


if __name__ == "__main__":
    main()
