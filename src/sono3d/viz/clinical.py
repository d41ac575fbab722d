"""Clinical heart figures: the evaluation's (the S2MNet paper's Fig. 3, an EF agreement plot), the AHA
bull's-eye and a beat's volume curve.

* :func:`ef_bland_altman_figure`: Bland-Altman plot of predicted against true EF, one panel per
  method (mean of the pair on x, prediction minus truth on y, bias and 95% limits of agreement).
* :func:`iou_box_figure`: box-and-whisker plot of per-case IoU per method.
* :func:`evaluation_figures`: both, from the per-case rows of an evaluation
  (:func:`sono3d.heart.evaluate.evaluate_split`), as ``sono3d heart evaluate`` writes them.
* :func:`bullseye_figure`: the AHA 17-segment bull's-eye of one value per segment.
* :func:`volume_curve_figure`: LV volume over a beat, two curves (e.g. real and fitted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sono3d.metrics.stats import bland_altman
from sono3d.types import PHASES
from sono3d.viz.figures import pyplot, save_png

__all__ = ["ef_bland_altman_figure", "iou_box_figure", "evaluation_figures", "EF_FIGURE", "IOU_FIGURE",
           "bullseye_figure", "volume_curve_figure"]

EF_FIGURE = "ef_bland_altman.png"
IOU_FIGURE = "iou_box.png"


def ef_bland_altman_figure(pred_by_method: dict[str, Any], truth: Any, path: str | Path) -> Path:
    """Bland-Altman panels of EF (percent) per method against the truth; returns the PNG path."""
    plt = pyplot()
    n = max(1, len(pred_by_method))
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.0), squeeze=False)
    for ax, (name, pred) in zip(axes[0], pred_by_method.items(), strict=False):
        ba = bland_altman(pred, truth)
        ax.scatter(ba.mean, ba.diff, s=14, alpha=0.75)
        ax.axhline(ba.bias, color="k", lw=1, label=f"bias {ba.bias:+.1f}")
        for v in ba.loa:
            ax.axhline(v, color="k", lw=0.8, ls="--")
        ax.set_title(f"{name}: LoA {ba.loa[0]:+.1f} to {ba.loa[1]:+.1f}")
        ax.set_xlabel("mean of predicted and true EF (%)")
        ax.set_ylabel("predicted - true EF (%)")
        ax.legend(loc="upper right", fontsize=8)
    return save_png(fig, path, dpi=120, bbox_inches="tight")


def iou_box_figure(iou_by_method: dict[str, Any], path: str | Path, resolution: int = 128) -> Path:
    """Box-and-whisker plot of per-case IoU per method; returns the PNG path."""
    plt = pyplot()
    names = list(iou_by_method)
    data = [np.asarray(iou_by_method[k], dtype=float) for k in names]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(names), 4.0))
    box = ax.boxplot(data, patch_artist=True, widths=0.55)
    ax.set_xticks(range(1, len(names) + 1), names)
    colours = ["#d04040", "#4070c0", "#50a060", "#a060b0"]
    for patch, c in zip(box["boxes"], colours, strict=False):
        patch.set_facecolor(c)
        patch.set_alpha(0.6)
    ax.set_ylabel(f"IoU at {resolution}³")
    ax.set_ylim(min(0.5, min((float(d.min()) for d in data if d.size), default=0.5) - 0.02), 1.0)
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path, dpi=120, bbox_inches="tight")


def evaluation_figures(rows: list[dict[str, Any]], out_dir: str | Path, resolution: int = 128) -> list[Path]:
    """The EF Bland-Altman plot and the IoU box plot of an evaluation's per-case rows.

    ``rows`` are the evaluation's ``cases.csv`` rows (``ef_true``, ``ef_s2mnet``, ``iou_ed``,
    ``iou_es`` and, with a voxel baseline, ``ef_baseline``, ``baseline_iou_ed``, ``baseline_iou_es``).
    The baseline's EF panel is drawn only when every case has one. Writes nothing for fewer than two
    cases (a Bland-Altman plot needs two pairs). Returns the paths written.
    """
    if len(rows) < 2:
        return []
    out = Path(out_dir)
    ef_pairs = {"S2MNet": [r["ef_s2mnet"] for r in rows]}
    if all(np.isfinite([r.get("ef_baseline", np.nan) for r in rows])):
        ef_pairs["Voxel baseline"] = [r["ef_baseline"] for r in rows]
    ious = {"S2MNet": [r[f"iou_{ph}"] for r in rows for ph in PHASES]}
    if f"baseline_iou_{PHASES[0]}" in rows[0]:
        ious["Voxel baseline"] = [r[f"baseline_iou_{ph}"] for r in rows for ph in PHASES]
    return [ef_bland_altman_figure(ef_pairs, [r["ef_true"] for r in rows], out / EF_FIGURE),
            iou_box_figure(ious, out / IOU_FIGURE, resolution=resolution)]


# AHA bull's-eye layout: rings from the outside (basal) in; segment 1 (anterior) at the top, the
# septum (2, 3 and 8, 9 and 14) on the left, the lateral wall on the right (Cerqueira et al. 2002).
_BULLSEYE_RINGS = (((1, 2, 3, 4, 5, 6), 90.0, 60.0), ((7, 8, 9, 10, 11, 12), 90.0, 60.0),
                   ((13, 14, 15, 16), 90.0, 90.0))


def _ink(rgba: Any) -> str:
    """Black or white text, whichever reads better on the colour ``rgba``."""
    r, g, b = rgba[:3]
    return "k" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "w"


def bullseye_figure(values: dict[int, float], path: str | Path, title: str = "", label: str = "",
                    cmap: str = "RdBu", vmin: float | None = None, vmax: float | None = None,
                    fmt: str = "{:.1f}") -> Path:
    """The AHA 17-segment bull's-eye, each segment coloured by ``values[segment]`` and labelled
    with its number and value; returns the PNG path.

    Layout: basal ring outside, mid, apical, the apex (17) in the centre; segment 1 (anterior) at
    the top, the septum on the left (the standard view from the apex).
    """
    plt = pyplot()
    import matplotlib
    from matplotlib.patches import Circle, Wedge

    v = {int(k): float(x) for k, x in values.items()}
    finite = [x for x in v.values() if np.isfinite(x)]
    lo = vmin if vmin is not None else (min(finite) if finite else 0.0)
    hi = vmax if vmax is not None else (max(finite) if finite else 1.0)
    if hi <= lo:
        hi = lo + 1.0
    norm = matplotlib.colors.Normalize(lo, hi)
    cm = matplotlib.colormaps[cmap]
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    radii = (1.0, 0.75, 0.5, 0.25)
    for r, (segs, centre, width) in enumerate(_BULLSEYE_RINGS):
        r_out, r_in = radii[r], radii[r + 1]
        for i, seg in enumerate(segs):
            # counter-clockwise from the top: anterior, anteroseptal (left), ... as seen from the apex
            mid = centre + i * width
            x = v.get(seg, float("nan"))
            colour = cm(norm(x)) if np.isfinite(x) else (0.85, 0.85, 0.85, 1.0)
            ax.add_patch(Wedge((0, 0), r_out, mid - width / 2, mid + width / 2, width=r_out - r_in,
                               facecolor=colour, edgecolor="k", lw=1.0))
            rr = 0.5 * (r_out + r_in)
            ax.text(rr * np.cos(np.deg2rad(mid)), rr * np.sin(np.deg2rad(mid)),
                    f"{seg}\n" + (fmt.format(x) if np.isfinite(x) else "–"), ha="center", va="center", fontsize=8,
                    color=_ink(colour))
    x17 = v.get(17, float("nan"))
    c17 = cm(norm(x17)) if np.isfinite(x17) else (0.85, 0.85, 0.85, 1.0)
    ax.add_patch(Circle((0, 0), radii[3], facecolor=c17, edgecolor="k", lw=1.0))
    ax.text(0, 0, "17\n" + (fmt.format(x17) if np.isfinite(x17) else "–"), ha="center", va="center", fontsize=8,
            color=_ink(c17))
    for text, (x, y) in (("anterior", (0, 1.08)), ("septal", (-1.08, 0)), ("inferior", (0, -1.08)),
                         ("lateral", (1.08, 0))):
        ax.text(x, y, text, ha="center", va="center", fontsize=8, rotation=90 if x else 0)
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-1.2, 1.2)
    ax.set_aspect("equal")
    ax.axis("off")
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cm)
    fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.04, label=label)
    if title:
        ax.set_title(title)
    return save_png(fig, path, dpi=120, bbox_inches="tight")


def volume_curve_figure(phases: list[str], real_ml: Any, fitted_ml: Any, path: str | Path,
                        ed: int | None = None, es: int | None = None, labels: tuple[str, str] =
                        ("capped real surface", "fitted template")) -> Path:
    """LV volume (mL) over the phases of a beat: two curves, ED and ES marked; returns the PNG path."""
    plt = pyplot()

    real = np.asarray(real_ml, dtype=float)
    fit = np.asarray(fitted_ml, dtype=float)
    x = np.arange(len(real))
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6.4, 5.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot(x, real, "o-", color="k", ms=3, label=labels[0])
    ax.plot(x, fit, "s--", color="#d04040", ms=3, label=labels[1])
    for k, name in ((ed, "ED"), (es, "ES")):
        if k is not None:
            ax.axvline(k, color="0.6", lw=0.8, ls=":")
            ax.text(k, ax.get_ylim()[1], name, ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("LV volume (mL)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    err = 100.0 * (fit - real) / real
    ax2.bar(x, err, color="#d04040", alpha=0.7)
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_ylabel("error (%)")
    ax2.set_xlabel("phase")
    ax2.set_xticks(x[:: max(1, len(x) // 12)], [phases[i] for i in x[:: max(1, len(x) // 12)]])
    ax2.grid(alpha=0.3)
    return save_png(fig, path, dpi=120, bbox_inches="tight")
