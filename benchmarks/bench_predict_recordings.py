"""Recordings to a heart: seconds per stage of ``sono3d heart predict --a4c FILE ...`` after loading.

Wall seconds and this process's CPU seconds (``time.process_time``: on a machine shared with other
work, what the stage would take alone on one core, threads summed) are both reported. "After
loading" means with the two runs (S2MNet, view-plane regressor) in memory and the Python
modules imported, as in a running service; each recording set is run once to warm up, then
``--repeat`` times, and the best time of each stage is kept:

* ``decode``: reading the files (:func:`sono3d.intake.read_echo`: PNG / ffmpeg decode), the
  baseline every ratio is taken against;
* ``intake``: :func:`sono3d.heart.views_intake.intake_views` (decode again, sector search,
  resampling, ED/ES);
* ``predict``: :func:`sono3d.heart.predict.predict_arrays` (network, volumes, strain, input check,
  planes, overlay slicing);
* ``write``: ``views.npz`` + ``views.png``, meshes, ``report.json`` and ``overlay.png`` into a
  temporary folder.

Default recordings: the six TTE47 stills and the three apical loops (as A4C) from
``../shared/data/echo`` beside the checkout. Prints a table, then ONE JSON line.

    .venv/bin/python benchmarks/bench_predict_recordings.py --run RUN --pose-run POSE [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sono3d.heart.checkpoint import load_run
from sono3d.heart.overlay import OVERLAY_LABELS
from sono3d.heart.predict import predict_arrays, write_prediction
from sono3d.heart.views_intake import intake_views, views_arrays, write_views
from sono3d.intake import read_echo
from sono3d.simulate.echo_views import VIEW_NAMES, ViewOptions
from sono3d.viz.overlay import overlay_figure

ECHO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "echo"
TTE_DEPTHS = {"a4c": 150, "a2c": 190, "a3c": 170, "sax_basal": 140, "sax_mid": 150, "sax_apical": 150}
TARGET_S = 5.0


def _cases() -> dict[str, tuple[dict[str, Path], dict[str, float] | None]]:
    cases = {"tte47 (6 stills)": ({v: ECHO / "tte47" / f"{v}.png" for v in VIEW_NAMES}, TTE_DEPTHS)}
    for clip in ("echotracker_a4c", "echotracker_apical", "fiammante_apical"):
        cases[f"{clip} (A4C loop)"] = ({"a4c": ECHO / "clips" / f"{clip}.mp4"}, None)
    return {k: v for k, v in cases.items() if all(p.is_file() for p in v[0].values())}


class _Clock:
    """Wall and CPU seconds of consecutive stages."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self._mark()

    def _mark(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stage(self, name: str) -> None:
        self.t[name] = time.perf_counter() - self.wall
        self.t[f"{name}_cpu"] = time.process_time() - self.cpu
        self._mark()


def _once(paths: dict[str, Path], depths: dict[str, float] | None, run, pose, out: Path) -> dict[str, float]:
    c = _Clock()
    for p in paths.values():
        read_echo(p)
    c.stage("decode")
    intake = intake_views(paths, options=ViewOptions(), depth_mm=depths)
    c.stage("intake")
    pred = predict_arrays(run, views_arrays(intake), pose)
    c.stage("predict")
    out.mkdir(parents=True, exist_ok=True)
    write_views(out / "views.npz", intake)
    overlay_figure(pred.echo, pred.overlay, pred.present, VIEW_NAMES, pred.phase_names, OVERLAY_LABELS,
                   out / "overlay.png")
    write_prediction(pred, out, ("views.npz", "views.png", "overlay.png"))
    c.stage("write")
    t = c.t
    for suffix in ("", "_cpu"):
        t[f"after_loading{suffix}"] = t[f"intake{suffix}"] + t[f"predict{suffix}"] + t[f"write{suffix}"]
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="an S2MNet run trained with --view-dropout")
    ap.add_argument("--pose-run", required=True, help="a view-plane regressor run")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    cases = _cases()
    if not cases:
        raise SystemExit(f"no recordings found under {ECHO}")
    run, pose = load_run(args.run, expect_kind="s2mnet"), load_run(args.pose_run, expect_kind="pose")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (paths, depths) in cases.items():
            _once(paths, depths, run, pose, Path(tmp) / "warm")
            runs = [_once(paths, depths, run, pose, Path(tmp) / f"r{i}") for i in range(args.repeat)]
            results[name] = {k: min(r[k] for r in runs) for k in runs[0]}
    print(f"{'recordings (wall s; CPU s)':32s} {'decode':>11s} {'intake':>11s} {'predict':>11s} {'write':>11s} "
          f"{'after loading':>14s} {'/ decode':>9s}")
    for name, r in results.items():
        cells = " ".join(f"{r[k]:5.2f};{r[k + '_cpu']:5.2f}" for k in ("decode", "intake", "predict", "write"))
        print(f"{name:32s} {cells} {r['after_loading']:6.2f};{r['after_loading_cpu']:6.2f} "
              f"{r['after_loading'] / r['decode']:9.1f}")
    worst = max(r["after_loading"] for r in results.values())
    worst_cpu = max(r["after_loading_cpu"] for r in results.values())
    print(json.dumps({"bench": "predict_recordings", "seconds": results, "worst_after_loading_s": worst,
                      "worst_after_loading_cpu_s": worst_cpu, "target_s": TARGET_S, "met_wall": worst <= TARGET_S,
                      "met_cpu": worst_cpu <= TARGET_S}))


if __name__ == "__main__":
    main()
