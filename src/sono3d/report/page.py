"""One self-contained HTML page: plotly.js, the page's script and style, and every figure's data inline.

The page needs no network: plotly.js comes from the ``plotly`` Python package (its bundled
``plotly.min.js``, MIT licence, whose text the page carries), figures are embedded as plotly JSON
(NumPy arrays as base64 typed arrays), pictures as ``data:`` URIs, volumes as base64 grey levels
that the page's script (``assets/report.js``) slices. Plots are drawn as they come near the screen;
when those on the first screen are drawn the script sets ``window.SONO3D.ready`` and
``window.SONO3D.readyMs`` (milliseconds since navigation started) and ``<html data-ready="1">``;
``window.SONO3D.drawAll()`` draws the rest and resolves when all is drawn (``window.SONO3D.allMs``).
The browser tests and the load-time benchmark use these.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from sono3d import __version__
from sono3d.io.atomic import atomic_path

__all__ = ["Page", "fmt", "plotly_js", "plotly_licence"]

_SLICE_NAMES = ("axial", "coronal", "sagittal")


def fmt(value: Any, digits: int = 4) -> str:
    """A number for people: ``digits`` significant figures, ``n/a`` for None or NaN."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.{digits}g}"
    return str(value)


def plotly_js() -> tuple[str, str]:
    """The bundled plotly.js (minified source) and its version, from the ``plotly`` package."""
    from plotly.offline import get_plotlyjs

    src = get_plotlyjs()
    head = src[:200]
    version = head.split("plotly.js v", 1)[1].split()[0] if "plotly.js v" in head else "unknown"
    return src, version


def plotly_licence() -> str:
    """The licence text shipped with the ``plotly`` package (plotly.js and plotly.py are both MIT)."""
    from importlib import metadata

    for f in metadata.files("plotly") or []:
        if f.name.upper().startswith("LICENSE"):
            try:
                return f.read_text()
            except OSError:
                continue
    return "plotly.js is distributed under the MIT licence (Copyright Plotly, Inc.)."


def _asset(name: str) -> str:
    return resources.files("sono3d.report").joinpath("assets", name).read_text(encoding="utf-8")


def _json_script(obj: Any) -> str:
    """JSON safe inside ``<script>``: no ``</`` can close the element early."""
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/")


class Page:
    """Builds one report page block by block; :meth:`write` saves it atomically.

    Parameters
    ----------
    title : str
        Page heading (also the browser tab's title).
    kind : str
        The recognised result kind (``heart predict``, ``sweep reconstruct``, ...), shown under the title.
    source : path-like
        The result folder the page was made from.
    """

    def __init__(self, title: str, kind: str, source: str | Path) -> None:
        self.title = title
        self.kind = kind
        self.source = Path(source)
        self._blocks: list[str] = []
        self._data: list[str] = []
        self._notes: list[str] = []
        self._n = 0

    # -- plumbing -------------------------------------------------------------------------------
    def _id(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}"

    def add_html(self, fragment: str) -> None:
        """Append raw HTML (callers escape their text)."""
        self._blocks.append(fragment)

    def _payload(self, role: str, obj: Any, target: str) -> None:
        self._data.append(f'<script type="application/json" data-role="{role}" data-target="{target}">'
                          f"{_json_script(obj)}</script>")

    # -- text -----------------------------------------------------------------------------------
    def section(self, title: str, intro: str | None = None) -> None:
        """Start a section with a heading (and an optional sentence under it)."""
        self.add_html(f"<h2>{html.escape(title)}</h2>")
        if intro:
            self.add_html(f'<p class="intro">{html.escape(intro)}</p>')

    def paragraph(self, text: str, css: str = "") -> None:
        self.add_html(f'<p class="{css}">{html.escape(text)}</p>')

    def note(self, text: str) -> None:
        """A note shown at the top of the page (a downsampled volume, a missing file, ...)."""
        self._notes.append(text)

    def banner(self, headline: str, detail: str, level: str) -> None:
        """A prominent verdict box; ``level`` is ``ok``, ``bad`` or ``unknown``."""
        self.add_html(f'<div class="banner {html.escape(level)}" role="status"><strong>{html.escape(headline)}</strong>'
                      f"<span>{html.escape(detail)}</span></div>")

    def metrics(self, items: Iterable[tuple[str, Any, str]]) -> None:
        """Big-number cards: ``(label, value, unit)``."""
        cards = "".join(f'<div class="card"><div class="value">{html.escape(fmt(v, 3))}<small>{html.escape(u)}</small>'
                        f'</div><div class="label">{html.escape(k)}</div></div>' for k, v, u in items)
        self.add_html(f'<div class="cards">{cards}</div>')

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], sortable: bool = False,
              caption: str | None = None, digits: int = 4) -> str:
        """A table; with ``sortable`` a click on a column heading sorts by it (numbers as numbers)."""
        tid = self._id("table")
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = []
        for r in rows:
            cells = []
            for v in r:
                num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                key = f' data-v="{float(v)!r}"' if num and math.isfinite(float(v)) else ""
                cells.append(f"<td{key}>{html.escape(fmt(v, digits))}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        cls = "data sortable" if sortable else "data"
        self.add_html(f'<div class="tablewrap"><table id="{tid}" class="{cls}">{cap}<thead><tr>{head}</tr></thead>'
                      f'<tbody>{"".join(body)}</tbody></table></div>')
        return tid

    def details(self, summary: str, text: str) -> None:
        """A collapsed block of preformatted text (a configuration, a licence)."""
        self.add_html(f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>")

    # -- pictures -------------------------------------------------------------------------------
    def images(self, items: Sequence[tuple[str, str]], css: str = "gallery") -> None:
        """Pictures ``(data URI, caption)`` side by side."""
        figs = "".join(f'<figure><img src="{uri}" alt="{html.escape(cap)}"><figcaption>{html.escape(cap)}'
                       f"</figcaption></figure>" for uri, cap in items)
        self.add_html(f'<div class="{css}">{figs}</div>')

    # -- plots ----------------------------------------------------------------------------------
    def figure(self, fig: Any, height: int = 420, css: str = "plot") -> str:
        """Embed a plotly figure (``plotly.graph_objects.Figure``); returns its element id."""
        import plotly.io as pio

        fid = self._id("fig")
        fig.update_layout(height=height, template="plotly_white", margin=dict(l=50, r=20, t=40, b=40))
        self.add_html(f'<div class="{css}" id="{fid}" style="height:{height}px"></div>')
        # plotly's JSON encoder writes NumPy arrays as base64 typed arrays and escapes "/".
        self._data.append(f'<script type="application/json" data-role="figure" data-target="{fid}">'
                          f"{pio.to_json(fig, validate=True)}</script>")
        return fid

    def volume_viewer(self, volume: dict[str, Any], scene_id: str | None, plane_traces: Sequence[int] = (0, 1, 2),
                      title: str = "volume") -> str:
        """Three orthogonal slices with sliders (and the slice planes in the 3D figure ``scene_id``).

        ``volume`` is :meth:`VolumeData.to_json`; the page's script draws the slices as heatmaps and
        moves the matching surface traces ``plane_traces`` of ``scene_id`` with the sliders.
        """
        vid = self._id("vol")
        X, Y, Z = volume["shape"]
        fixed = {"axial": (2, Z), "coronal": (1, Y), "sagittal": (0, X)}
        panes = []
        for name in _SLICE_NAMES:
            axis, n = fixed[name]
            panes.append(
                f'<div class="slice"><div class="sliceplot" id="{vid}-{name}"></div>'
                f'<label>{name} <input type="range" id="{vid}-{name}-range" data-axis="{axis}" min="0" '
                f'max="{n - 1}" step="1" value="{n // 2}"> <output id="{vid}-{name}-out"></output></label></div>')
        self.add_html(f'<div class="volviewer" id="{vid}" aria-label="{html.escape(title)}">{"".join(panes)}</div>')
        self._payload("volume", {"volume": volume, "scene": scene_id, "planes": list(plane_traces)}, vid)
        return vid

    def phase_switcher(self, fig_id: str, traces: Sequence[int], phases: dict[str, list[dict[str, str]]]) -> str:
        """A slider (and a play button) that swaps the geometry of ``traces`` of ``fig_id`` between phases.

        ``phases`` maps a phase name to one record per trace with base64 ``x y z`` (float32) and
        optionally ``i j k`` (int32).
        """
        pid = self._id("phase")
        names = list(phases)
        ticks = "".join(f"<span>{html.escape(n)}</span>" for n in names)
        self.add_html(f'<div class="phases" id="{pid}"><button type="button" id="{pid}-play">play</button>'
                      f'<input type="range" id="{pid}-range" min="0" max="{len(names) - 1}" step="1" value="0">'
                      f'<div class="ticks">{ticks}</div></div>')
        self._payload("phases", {"figure": fig_id, "traces": list(traces), "names": names,
                                 "phases": [phases[n] for n in names]}, pid)
        return pid

    # -- output ---------------------------------------------------------------------------------
    def render(self) -> str:
        """The whole page as one HTML string."""
        js, js_version = plotly_js()
        made = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self._notes)
        notes_html = f'<ul class="notes">{notes}</ul>' if notes else ""
        licence = html.escape(plotly_licence())
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="sono3d {html.escape(__version__)}">
<title>{html.escape(self.title)}</title>
<style>{_asset("report.css")}</style>
</head><body>
<header><h1>{html.escape(self.title)}</h1>
<p class="meta">{html.escape(self.kind)} &middot; <code>{html.escape(self.source.name or str(self.source))}</code>
&middot; made {html.escape(made)} by sono3d {html.escape(__version__)} &middot; <span id="ready-note">drawing&hellip;</span></p>
{notes_html}</header>
<main>
{"".join(self._blocks)}
</main>
<footer>Units: millimetres, RAS world frame. Plots drawn with plotly.js {html.escape(js_version)} (MIT licence), embedded in this file
so that it opens without a network.
<details><summary>plotly licence</summary><pre>{licence}</pre></details></footer>
{"".join(self._data)}
<script>{js}</script>
<script>{_asset("report.js")}</script>
</body></html>
"""

    def write(self, path: str | Path) -> Path:
        """Write the page atomically (UTF-8) and return its path."""
        dest = Path(path)
        text = self.render()
        with atomic_path(dest) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return dest
