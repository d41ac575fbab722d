"""Every command the README shows runs, in the README's order, on tiny generated input.

The README's examples are read from the file itself: the example column of the command-line table,
the ``sono3d`` lines of its bash blocks and its Python snippet. Each runs through typer's
``CliRunner`` in a temporary folder (the examples' relative paths land there) with the verbs,
positional arguments and options the README gives; only the sizes in :data:`HOW` change, so the
whole file runs in seconds. A README command whose verb has no entry in :data:`HOW` fails
:func:`test_every_readme_command_is_handled`: a new example needs a line here.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shlex
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

import sono3d.demo
from sono3d.cli import app
from sono3d.sweep import ReconstructConfig

from conftest import ROOT, SHARED_DATA, write_lv_beat
from echo_screens import fake_screen

README = ROOT / "README.md"

runner = CliRunner()


@dataclass(frozen=True)
class How:
    """How one verb's README examples run here.

    ``options`` replace the README's value of an option or add it (``None``: a flag);
    ``inputs(args)`` may make a stand-in for a real input the README names and return the arguments
    pointing at it; ``outputs(args)`` names the files the command must have written, from its
    positional arguments; ``check(args, output)`` asserts on what it printed.
    """

    options: dict[str, str | None] = field(default_factory=dict)
    inputs: Callable[[list[str]], list[str]] | None = None
    outputs: Callable[[list[str]], list[str]] = lambda args: []
    check: Callable[[list[str], str], None] | None = None


def _correlate_printed(args: list[str], output: str) -> None:
    res = json.loads(output.strip().splitlines()[-1])
    assert res["n"] >= 3 and -1 <= res["pearson"]["r"] <= 1, res


def _strain_printed(args: list[str], output: str) -> None:
    res = json.loads(output)  # of a one-epoch network's meshes: any finite numbers
    assert res["edv_ml"] > 0 and res["esv_ml"] > 0 and math.isfinite(res["gls_pct"] + res["gcs_pct"]), res
    assert [seg["segment"] for seg in res["segments"]] == list(range(1, 18)), res


def _fit_real_printed(args: list[str], output: str) -> None:
    res = json.loads(output.strip().splitlines()[-1])
    assert res["phases"] == 2 and abs(res["ef_fitted"] - res["ef_direct"]) < 2.0, res


def _stand_in_beat(args: list[str]) -> list[str]:
    """The README fits the biv-me patient (25 phases, about 40 s); here a synthetic two-phase LV beat
    with biv-me file names stands in. tests/test_heart_fit_real.py fits the real patient."""
    source = positional(args)[0]
    write_lv_beat(Path("stand_in_beat"))
    return [("stand_in_beat" if a == source else a) for a in args]


VIEW_FLAGS = ("--a4c", "--a2c", "--a3c", "--sax-basal", "--sax-mid", "--sax-apical")


def _stand_in_recordings(args: list[str]) -> list[str]:
    """The README's recordings (real stills and loops beside the checkout, or the reader's own)
    replaced by fake scanner screens with a known fan: a PNG for an image, a folder of four frames
    for a video. tests/test_cli_heart_predict.py runs the real ones."""
    args = list(args)
    for i, a in enumerate(args[:-1]):
        if a not in VIEW_FLAGS:
            continue
        name = f"stand_in_{a[2:]}"
        loop = Path(args[i + 1]).suffix.lower() in (".mp4", ".avi", ".mov")
        frames, _ = fake_screen(rng=np.random.default_rng(i), frames=4 if loop else 1)
        if loop:
            Path(name).mkdir(exist_ok=True)
            for k, f in enumerate(frames):
                Image.fromarray(f).save(f"{name}/frame{k}.png")
        else:
            name += ".png"
            Image.fromarray(frames[0]).save(name)
        args[i + 1] = name
    return args


def _stand_in_real(args: list[str]) -> list[str]:
    """The real echo loops the README names (beside the checkout) replaced by folders of four fake
    scanner screens each. tests/test_style.py runs a real still through the intake."""
    args = list(args)
    for i, a in enumerate(args):
        if a.startswith("../shared/"):
            name = f"stand_in_real_{i}"
            frames, _ = fake_screen(rng=np.random.default_rng(100 + i), frames=4)
            Path(name).mkdir(exist_ok=True)
            for k, f in enumerate(frames):
                Image.fromarray(f).save(f"{name}/frame{k}.png")
            args[i] = name
    return args


def _gap_printed(args: list[str], output: str) -> None:
    res = json.loads(output.strip().splitlines()[-1])
    assert res["n_real"] == 8 and res["n_synthetic"] == 6 and 0 <= res["auc"] <= 1 and "style" in res, res


def _predict_outputs(a: list[str]) -> list[str]:
    out = a[-1]
    files = [f"{out}/report.json", f"{out}/report.html"]
    if len(a) == 3:  # RUN_DIR VIEWS.npz OUT_DIR
        return files + [f"{out}/heart_ed.vtp", f"{out}/heart_es.vtp"]
    return files + [f"{out}/views.npz", f"{out}/views.png"]  # from recordings


def _info_printed(args: list[str], output: str) -> None:
    res = json.loads(output.strip().splitlines()[-1])
    assert res["kind"] == "sweep" and res["frames"] > 0, res


def _report_printed(args: list[str], output: str) -> None:
    page = args[1] if len(args) > 1 else f"{args[0]}/report.html"
    assert output.strip().splitlines()[-1] == page, output
    assert Path(page).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


# Options that take no value (everything else in an example takes one).
FLAGS = {"--fill-holes", "--no-fill-holes", "--json", "--quiet", "--no-progress", "--no-3d", "--resume", "--recompute",
         "--density-control", "--no-density-control", "--refine-poses", "--no-refine-poses", "--no-figures",
         "--register", "--cross-view", "--exact-offset"}

HOW: dict[str, How] = {
    "info": How(check=_info_printed),
    "phantom uterus": How(outputs=lambda a: [f"{a[0]}/labels.nii.gz", f"{a[0]}/bmode.nii.gz", f"{a[0]}/surface.vtp"]),
    "simulate sweep": How({"--frames": "12", "--size": "48"}, outputs=lambda a: [a[1]]),
    "sweep compound": How(outputs=lambda a: [a[1]]),
    "simulate sweep-pair": How({"--frames": "12", "--size": "48"},
                               outputs=lambda a: [f"{a[1]}/{n}" for n in ("a.seq.nrrd", "b.seq.nrrd", "truth.json")]),
    # one sweep: slices.png; several (the last positional is the folder): one slices_<name>.png each
    "sweep reconstruct": How({"--preset": "small", "--epochs": "2", "--quiet": None},
                             outputs=lambda a: [f"{a[-1]}/{n}" for n in ("gaussians.ply", "volume.nii.gz", "report.json",
                                                                         "report.html")]
                             + ([f"{a[-1]}/slices.png"] if len(a) == 2 else
                                [f"{a[-1]}/slices_{p.split('/')[-1].split('.')[0]}.png" for p in a[:-1]])),
    "sweep compare": How({"--preset": "small", "--epochs": "2", "--quiet": None},
                         outputs=lambda a: [f"{a[1]}/{n}" for n in ("report.json", "compare.png", "report.html")]),
    "sweep render": How(outputs=lambda a: [a[2]]),
    "heart cohort": How({"--n": "3", "--size": "64", "--no-progress": None}, outputs=lambda a: [f"{a[0]}/manifest.csv"]),
    "heart show-case": How(outputs=lambda a: [a[2]]),
    "heart correspond": How({"--blur": "3", "--no-progress": None},
                            outputs=lambda a: [f"{a[0]}/cases/00001/deformation.npz"]),
    "heart train": How({"--config": "tiny", "--epochs": "1", "--no-progress": None},
                       outputs=lambda a: [f"{a[1]}/checkpoint.pt"]),
    "heart views": How(inputs=_stand_in_recordings, outputs=lambda a: [a[0], a[0][:-4] + ".png"]),
    "heart predict": How(inputs=_stand_in_recordings, outputs=_predict_outputs),
    "heart evaluate": How({"--resolution": "32"}, outputs=lambda a: [f"{a[2]}/report.json", f"{a[2]}/report.html"]),
    "heart strain": How(check=_strain_printed),
    "heart fit-real": How(inputs=_stand_in_beat, check=_fit_real_printed,
                          outputs=lambda a: [f"{a[1]}/{n}" for n in ("fitted_000.vtp", "fitted_001.vtp", "volumes.csv",
                                                                     "report.json", "volume_curve.png",
                                                                     "bullseye_gls.png")]),
    "heart correlate": How(check=_correlate_printed),
    "style train": How({"--size": "64", "--config": "tiny", "--no-progress": None}, inputs=_stand_in_real,
                       outputs=lambda a: [f"{a[-1]}/checkpoint.pt", f"{a[-1]}/train_log.json"]),
    "style apply": How(outputs=lambda a: [a[2]]),
    "style gap": How({"--split": "all", "--view-size": "64", "--size": "32", "--epochs": "2"}, inputs=_stand_in_real,
                     check=_gap_printed),
    # sono3d demo has no size options: test_readme_sweep_examples swaps in a smaller demo_comparison.
    "demo": How(outputs=lambda a: ["out/demo/volume.nii.gz", "out/demo/report.json", "out/demo/report.html"]),
    "report": How(outputs=lambda a: [a[1] if len(a) > 1 else f"{a[0]}/report.html"], check=_report_printed),
}

# Shell lines of the README that are not sono3d commands, and why they do not run here.
NOT_RUN = {
    "make demo": "the demo runs here as 'sono3d demo' (the table's last row)",
    "make test": "this is the test suite",
}


# ------------------------------------------------------------------------------------ reading the README


def table_examples() -> list[str]:
    """The example column of the command-line table, top to bottom."""
    rows = [ln for ln in README.read_text().splitlines() if ln.startswith("| `sono3d ")]
    examples = []
    for row in rows:
        m = re.search(r"\| `(sono3d [^`]+)` \|$", row.rstrip())
        assert m, f"README table row without an example in its last column: {row}"
        examples.append(m.group(1))
    return examples


def fenced_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def shell_commands() -> list[str]:
    """The sono3d command lines of the bash blocks (comments and ``VAR=value`` prefixes dropped)."""
    commands = []
    for block in fenced_blocks("bash"):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            words = shlex.split(line)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                words.pop(0)  # thread settings: they change speed, not results
            if words:
                commands.append(shlex.join(words))
    return commands


def verb_and_args(command: str) -> tuple[str, list[str]]:
    """``"sono3d heart train a b --x 1"`` -> ``("heart train", ["a", "b", "--x", "1"])``."""
    words = shlex.split(command)
    assert words[0] == "sono3d", command
    group = typer.main.get_command(app)
    verb = []
    for word in words[1:]:
        if word not in getattr(group, "commands", {}):
            break
        verb.append(word)
        group = group.commands[word]
    assert verb, f"not a sono3d verb: {command}"
    return " ".join(verb), words[1 + len(verb):]


def positional(args: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(args):
        if args[i].startswith("--"):
            i += 1 if args[i] in FLAGS else 2
        else:
            out.append(args[i])
            i += 1
    return out


def with_options(args: list[str], options: dict[str, str | None]) -> list[str]:
    """``args`` with each of ``options`` set: a value replaced in place, or appended."""
    args = list(args)
    for name, value in options.items():
        if name in args:
            if value is not None:
                args[args.index(name) + 1] = value
        else:
            args += [name] if value is None else [name, value]
    return args


def run_example(command: str) -> None:
    verb, args = verb_and_args(command)
    how = HOW[verb]
    args = with_options(args, how.options)
    if how.inputs is not None:
        args = how.inputs(args)
    res = runner.invoke(app, [*verb.split(), *args])
    if res.exit_code != 0:
        trace = "".join(traceback.format_exception(*res.exc_info)) if res.exc_info and res.exit_code != 2 else ""
        pytest.fail(f"README example failed: {command}\n(run as: sono3d {verb} {shlex.join(args)})\n{res.output}{trace}")
    for path in how.outputs(positional(args)):
        assert Path(path).is_file(), f"README example wrote no {path}: {command}\n{res.output}"
    if how.check is not None:
        how.check(positional(args), res.output)


# ---------------------------------------------------------------------------------------------- tests


def test_every_readme_command_is_handled():
    commands = table_examples() + shell_commands()
    verbs = set()
    for command in commands:
        if command in NOT_RUN:
            continue
        assert command.startswith("sono3d "), f"README shell line neither a sono3d command nor in NOT_RUN: {command}"
        verb, args = verb_and_args(command)
        assert verb in HOW, f"README example with no handling in tests/test_readme_examples.py (add to HOW): {command}"
        verbs.add(verb)
    assert verbs == set(HOW), f"HOW entries no README example uses: {sorted(set(HOW) - verbs)}"
    assert len(fenced_blocks("python")) == 1, "one Python snippet is expected (test_readme_sweep_examples_and_python_snippet runs it)"
    # the sweep and heart tests below between them run every table row
    assert sorted(SWEEP_ROWS + HEART_ROWS) == sorted(c for c in table_examples() if not c.startswith("sono3d info "))


def _rows(*groups: str) -> list[str]:
    return [c for c in table_examples() if c.split()[1] in groups]


SWEEP_ROWS = _rows("phantom", "simulate", "sweep", "demo", "report")
HEART_ROWS = _rows("heart", "style")


def test_readme_info_example(monkeypatch, tmp_path):
    """The table's first row reads a real PLUS sweep beside the checkout (``../shared``)."""
    (command,) = _rows("info")
    verb, args = verb_and_args(command)
    (path,) = positional(args)
    prefix = "../shared/data/"
    assert path.startswith(prefix), command
    real = SHARED_DATA / path[len(prefix):]
    if not real.is_file():
        pytest.skip(f"real test file not found: {real}")
    monkeypatch.chdir(tmp_path)
    run_example(command.replace(path, str(real)))


def _small_demo(real):
    def smaller(out_dir, seed=0, progress=True, **_):
        return real(out_dir, seed=seed, frames=12, size_px=48, progress=progress,
                    config=ReconstructConfig.preset("small", epochs=2, seed=seed))
    return smaller


@pytest.mark.slow
def test_readme_sweep_examples_and_python_snippet(monkeypatch, tmp_path):
    """Table rows phantom -> simulate -> compound -> reconstruct -> render -> demo -> report, then the
    Python snippet on the sweep the table made."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sono3d.demo, "demo_comparison", _small_demo(sono3d.demo.demo_comparison))
    for command in SWEEP_ROWS:
        run_example(command)

    # The snippet as written, with the preset's epochs cut (its sweep comes from the table's simulate row).
    real_preset = ReconstructConfig.preset.__func__

    def few_epochs(cls, name="paper", **overrides):
        return real_preset(cls, name, **{**overrides, "epochs": 2, "gaussians_per_slice": 20})

    monkeypatch.setattr(ReconstructConfig, "preset", classmethod(few_epochs))
    (snippet,) = fenced_blocks("python")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet, str(README), "exec"), {"__name__": "readme_snippet"})
    holdout = printed.getvalue().strip()
    assert holdout.startswith("{") and "ssim" in holdout, holdout


@pytest.mark.slow
def test_readme_heart_examples(monkeypatch, tmp_path):
    """Table rows cohort -> show-case -> correspond -> train -> predict -> evaluate -> strain -> fit-real
    -> correlate -> style train -> style apply -> style gap."""
    monkeypatch.chdir(tmp_path)
    for command in HEART_ROWS:
        run_example(command)


def test_readme_checkpoint_recipe(monkeypatch, tmp_path):
    """The 'Reproducing the heart checkpoints' block (cohort, two trainings, evaluation), tiny."""
    monkeypatch.chdir(tmp_path)
    commands = [c for c in shell_commands() if c.startswith("sono3d ")]
    assert commands, "the README has no sono3d command block"
    for command in commands:
        run_example(command)
