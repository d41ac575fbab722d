"""The bad-input catalogue: every verb of the command line, refused the way sono3d refuses.

Each case runs one CLI command on a bad input and checks, with :func:`conftest.refused`: exit code
2, a single ``error:`` line that names the file or the option (sono3d's words first; a library's
words may follow, never cut mid-word), no traceback, nothing written under the output's final name,
and an output that already existed left as it was.

A case is one :class:`Case` row in :data:`CASES`; a new verb adds its rows (and, if it needs them,
inputs to :func:`inputs`). The count of cases per verb is printed by
``python -m pytest tests/test_bad_inputs.py --collect-only -q``.
"""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nrrd
import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.heart.cohort import generate_cohort
from sono3d.heart.training import TrainConfig, train
from sono3d.io import write_sweep
from sono3d.phantoms.uterus import build_uterus
from sono3d.simulate.sweeps import SweepConfig, simulate_sweep
from sono3d.types import Sweep

from conftest import refused, snapshot

runner = CliRunner()


class Evil:
    """A pickle payload that would run a shell command if anything unpickled it."""

    def __reduce__(self):  # noqa: ANN204
        return (eval, ("__import__('os').system('touch PWNED')",))


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> SimpleNamespace:
    """Valid inputs (a cohort, a trained run, a sweep) and bad files of every kind, made once."""
    root = tmp_path_factory.mktemp("bad")
    s = SimpleNamespace(root=root)
    s.cohort = root / "cohort"
    generate_cohort(s.cohort, 3, seed=1, size=32)
    s.run = root / "run"
    train(s.cohort, s.run, "s2mnet", TrainConfig.preset("tiny", epochs=1, max_cases=3), seed=0)
    s.views = s.cohort / "cases" / "00000" / "views.npz"
    sweep, _ = simulate_sweep(build_uterus(seed=1, mesh=False, spacing_mm=1.5), SweepConfig(frames=12, size_px=32))
    s.sweep = write_sweep(root / "sweep.seq.nrrd", sweep)
    one = sweep.subset([0])
    s.one_frame = write_sweep(root / "one.seq.nrrd", one)
    s.untracked = write_sweep(root / "untracked.seq.nrrd", Sweep(sweep.frames, None, sweep.spacing_mm))
    s.three_frames = write_sweep(root / "three.seq.nrrd", sweep.subset([0, 1, 2]))

    bad = root / "files"
    bad.mkdir()
    s.png = bad / "image.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(s.png)
    s.pickle = bad / "payload.npz"
    s.pickle.write_bytes(pickle.dumps(Evil(), protocol=4))
    s.object_npz = bad / "objects.npz"
    np.savez(s.object_npz, echo=np.array([Evil()], dtype=object))
    s.cut_npz = bad / "cut.npz"
    s.cut_npz.write_bytes(s.views.read_bytes()[:200])
    s.empty = bad / "empty.npz"
    s.empty.write_bytes(b"")
    with np.load(s.views) as z:
        echo, poses = z["echo"], z["poses"]
    s.nan_views = bad / "nan.npz"
    e = echo.copy()
    e[0, 2, 5, 5] = np.nan
    np.savez(s.nan_views, echo=e, poses=poses)
    s.five_views = bad / "five.npz"
    np.savez(s.five_views, echo=echo[:, :5])
    s.blank_view = bad / "blank.npz"
    e = echo.copy()
    e[1, 3] = 0.0
    np.savez(s.blank_view, echo=e)
    s.no_echo = bad / "no_echo.npz"
    np.savez(s.no_echo, poses=poses)
    s.tiny_views = bad / "tiny.npz"
    np.savez(s.tiny_views, echo=echo[:, :, :8, :8])

    def run_with(name: str, checkpoint: bytes) -> Path:
        d = bad / name
        d.mkdir()
        (d / "checkpoint.pt").write_bytes(checkpoint)
        return d

    evil = bad / "evil.pt"
    torch.save({"format": "sono3d-s2mnet-run-1", "x": Evil()}, evil)
    other = bad / "other.pt"
    torch.save({"format": "someone-else", "weights": torch.zeros(3)}, other)
    ck = (s.run / "checkpoint.pt").read_bytes()
    s.run_evil = run_with("run_evil", evil.read_bytes())
    s.run_cut = run_with("run_cut", ck[: len(ck) // 2])
    s.run_other = run_with("run_other", other.read_bytes())
    s.run_png = run_with("run_png", s.png.read_bytes())
    s.run_pickle = run_with("run_pickle", pickle.dumps(Evil(), protocol=2))

    s.foreign = root / "foreign"  # a folder of someone else's files
    s.foreign.mkdir()
    (s.foreign / "notes.txt").write_text("mine\n")
    s.text = bad / "table.csv"
    s.text.write_text("a,b\n1,2\n3,4\n5,6\n")
    s.huge_mha = bad / "huge.mha"
    s.huge_mha.write_text("ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 1000\n"
                          "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n")
    s.nan_sweep = bad / "nan.seq.nrrd"
    frames = np.full((3, 1, 20, 20), 0.5, np.float32)
    frames[1, 0, 3, 3] = np.nan
    nrrd.write(str(s.nan_sweep), frames, {"kinds": ["domain", "domain", "domain", "list"]}, index_order="C")
    s.cut_sweep = bad / "cut.seq.nrrd"
    data = s.sweep.read_bytes()
    s.cut_sweep.write_bytes(data[: len(data) // 2])
    s.bad_ply = bad / "g.ply"
    s.bad_ply.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nend_header\n1 2\n")
    # style: a tiny CycleGAN run (32 px) between the cohort and one case's views standing in for real echo
    s.style_run = root / "style_run"
    res = runner.invoke(app, ["style", "train", str(s.cohort / "cases" / "00001" / "views.npz"), str(s.cohort),
                              str(s.style_run), "--size", "32", "--config", "tiny", "--no-progress"])
    assert res.exit_code == 0, res.output
    s.empty_dir = bad / "no_frames"
    s.empty_dir.mkdir()
    s.flat_views = bad / "flat.npz"
    np.savez(s.flat_views, echo=np.full((6, 32, 32), 0.5, np.float32))
    s.big_views = bad / "big.npz"
    np.savez(s.big_views, echo=np.random.default_rng(0).random((6, 64, 64)).astype(np.float32))
    return s


@pytest.fixture
def i(shared, tmp_path) -> SimpleNamespace:
    """The shared inputs plus this case's own folder ``tmp`` for outputs."""
    return SimpleNamespace(**vars(shared), tmp=tmp_path)


@dataclass(frozen=True)
class Case:
    """One bad input: ``args(i)`` the command line; the error line must contain ``words(i)``;
    ``absent(i)`` must not exist afterwards; ``existing(i)`` (created by ``setup``) must not change."""

    verb: str
    name: str
    args: Callable[[Any], list]
    words: Callable[[Any], tuple]
    absent: Callable[[Any], tuple] = lambda i: ()
    existing: Callable[[Any], tuple] = lambda i: ()
    setup: Callable[[Any], None] | None = None
    marks: tuple = field(default_factory=tuple)

    @property
    def id(self) -> str:
        return f"{self.verb}: {self.name}"


def _existing_predict(i: Any) -> None:
    (i.tmp / "out").mkdir()
    (i.tmp / "out" / "report.json").write_text('{"old": true}\n')


def _existing_file(name: str) -> Callable[[Any], None]:
    def make(i: Any) -> None:
        (i.tmp / name).write_bytes(b"an older result")
    return make


def _existing_run(i: Any) -> None:
    shutil.copytree(i.run, i.tmp / "run")


def _existing_style_run(i: Any) -> None:
    shutil.copytree(i.style_run, i.tmp / "run")


def _style_train(real: str, *options: str, run: str = "r") -> Callable[[Any], list]:
    return lambda i: ["style", "train", getattr(i, real), i.cohort, i.tmp / run, "--size", "32", "--config", "tiny",
                      "--no-progress", *options]


def _style_apply(source: str = "views", run: str = "style_run", out: str = "o.npz", *options: str
                 ) -> Callable[[Any], list]:
    return lambda i: ["style", "apply", getattr(i, run), getattr(i, source), i.tmp / out, *options]


def _style_gap(*options: str) -> Callable[[Any], list]:
    return lambda i: ["style", "gap", i.views, "--synthetic", i.cohort, "--split", "all", "--view-size", "32",
                      "--size", "32", *options]


def _predict(views: str = "views", run: str = "run") -> Callable[[Any], list]:
    return lambda i: ["heart", "predict", getattr(i, run), getattr(i, views), i.tmp / "out"]


PREDICT = "heart predict"
TRAIN = "heart train"
COHORT = "heart cohort"
CORRESPOND = "heart correspond"
EVALUATE = "heart evaluate"
RECONSTRUCT = "sweep reconstruct"
COMPOUND = "sweep compound"
STYLE_TRAIN = "style train"
STYLE_APPLY = "style apply"
STYLE_GAP = "style gap"
COMPARE = "sweep compare"

CASES: list[Case] = [
    # heart predict: the views file
    Case(PREDICT, "PNG given as views", _predict("png"), lambda i: (str(i.png), "not a views file", "PNG image"),
         lambda i: (i.tmp / "out",)),
    Case(PREDICT, "pickle given as views", _predict("pickle"), lambda i: (str(i.pickle), "Python pickle"),
         lambda i: (i.tmp / "out",)),
    Case(PREDICT, "npz holding a pickled object array", _predict("object_npz"),
         lambda i: (str(i.object_npz), "Python objects", "never loads"), lambda i: (i.tmp / "out",)),
    Case(PREDICT, "truncated views", _predict("cut_npz"), lambda i: (str(i.cut_npz), "truncated or corrupt"),
         lambda i: (i.tmp / "out",)),
    Case(PREDICT, "empty views file", _predict("empty"), lambda i: (str(i.empty), "empty"), lambda i: (i.tmp / "out",)),
    Case(PREDICT, "missing views", lambda i: ["heart", "predict", i.run, i.tmp / "nope.npz", i.tmp / "out"],
         lambda i: (str(i.tmp / "nope.npz"), "no such views file"), lambda i: (i.tmp / "out",)),
    Case(PREDICT, "folder given as views", lambda i: ["heart", "predict", i.run, i.cohort, i.tmp / "out"],
         lambda i: (str(i.cohort), "is a folder"), lambda i: (i.tmp / "out",)),
    Case(PREDICT, "NaN pixel in the views", _predict("nan_views"), lambda i: (str(i.nan_views), "NaN"),
         lambda i: (i.tmp / "out",)),
    Case(PREDICT, "five views instead of six", _predict("five_views"), lambda i: (str(i.five_views), "shape"),
         lambda i: (i.tmp / "out",)),
    Case(PREDICT, "a blank (missing) view", _predict("blank_view"), lambda i: (str(i.blank_view), "blank"),
         lambda i: (i.tmp / "out",)),
    Case(PREDICT, "views without an echo array", _predict("no_echo"), lambda i: (str(i.no_echo), "'echo'"),
         lambda i: (i.tmp / "out",)),
    Case(PREDICT, "8x8-pixel views", _predict("tiny_views"), lambda i: (str(i.tiny_views), "too small"),
         lambda i: (i.tmp / "out",)),
    # heart predict: the run's checkpoint
    Case(PREDICT, "missing run folder", lambda i: ["heart", "predict", i.tmp / "norun", i.views, i.tmp / "out"],
         lambda i: (str(i.tmp / "norun"), "no such run folder"), lambda i: (i.tmp / "out",)),
    Case(PREDICT, "checkpoint with a pickle payload", _predict(run="run_evil"),
         lambda i: ("checkpoint.pt", "Python objects", "never loads"), lambda i: (i.tmp / "out",)),
    Case(PREDICT, "old-style pickle checkpoint", _predict(run="run_pickle"),
         lambda i: ("checkpoint.pt", "not a sono3d checkpoint", "Python pickle"), lambda i: (i.tmp / "out",)),
    Case(PREDICT, "truncated checkpoint", _predict(run="run_cut"),
         lambda i: ("checkpoint.pt", "truncated or corrupt"), lambda i: (i.tmp / "out",)),
    Case(PREDICT, "checkpoint of another program", _predict(run="run_other"),
         lambda i: ("checkpoint.pt", "not a sono3d S2MNet/voxel checkpoint"), lambda i: (i.tmp / "out",)),
    Case(PREDICT, "PNG given as the checkpoint", _predict(run="run_png"),
         lambda i: ("checkpoint.pt", "PNG image"), lambda i: (i.tmp / "out",)),
    Case(PREDICT, "missing --style run", lambda i: [*_predict()(i), "--style", i.tmp / "nostyle"],
         lambda i: (str(i.tmp / "nostyle"), "no such style run"), lambda i: (i.tmp / "out",)),
    Case(PREDICT, "existing output kept when the views are bad", _predict("png"), lambda i: (str(i.png),),
         existing=lambda i: (i.tmp / "out",), setup=_existing_predict),
    # heart train
    Case(TRAIN, "--epochs 0", lambda i: ["heart", "train", i.cohort, i.tmp / "r", "--epochs", "0"],
         lambda i: ("--epochs",), lambda i: (i.tmp / "r",)),
    Case(TRAIN, "unknown --config", lambda i: ["heart", "train", i.cohort, i.tmp / "r", "--config", "huge"],
         lambda i: ("--config", "huge"), lambda i: (i.tmp / "r",)),
    Case(TRAIN, "--max-cases 2", lambda i: ["heart", "train", i.cohort, i.tmp / "r", "--max-cases", "2"],
         lambda i: ("--max-cases",), lambda i: (i.tmp / "r",)),
    Case(TRAIN, "unknown --device", lambda i: ["heart", "train", i.cohort, i.tmp / "r", "--device", "tpu"],
         lambda i: ("device", "tpu"), lambda i: (i.tmp / "r",)),
    Case(TRAIN, "unknown --model", lambda i: ["heart", "train", i.cohort, i.tmp / "r", "--model", "nerf"],
         lambda i: ("model", "nerf"), lambda i: (i.tmp / "r",)),
    Case(TRAIN, "missing cohort", lambda i: ["heart", "train", i.tmp / "nocohort", i.tmp / "r", "--config", "tiny"],
         lambda i: (str(i.tmp / "nocohort"), "no cases"), lambda i: (i.tmp / "r",)),
    Case(TRAIN, "folder of another program as the cohort",
         lambda i: ["heart", "train", i.foreign, i.tmp / "r", "--config", "tiny"],
         lambda i: (str(i.foreign), "not a generated heart cohort"), lambda i: (i.tmp / "r",)),
    Case(TRAIN, "run folder is a file", lambda i: ["heart", "train", i.cohort, i.text, "--config", "tiny"],
         lambda i: (str(i.text), "not a folder")),
    Case(TRAIN, "--resume with nothing to resume",
         lambda i: ["heart", "train", i.cohort, i.tmp / "r", "--config", "tiny", "--resume"],
         lambda i: (str(i.tmp / "r"), "no checkpoint to resume"), lambda i: (i.tmp / "r",)),
    Case(TRAIN, "existing run kept without --resume",
         lambda i: ["heart", "train", i.cohort, i.tmp / "run", "--config", "tiny", "--no-progress"],
         lambda i: (str(i.tmp / "run"), "already holds a training run", "--resume"),
         existing=lambda i: (i.tmp / "run",), setup=_existing_run),
    Case(TRAIN, "--style with the pose model",
         lambda i: ["heart", "train", i.cohort, i.tmp / "r", "--model", "pose", "--style", i.style_run],
         lambda i: ("--style", "pose"), lambda i: (i.tmp / "r",)),
    Case(TRAIN, "--style of a heart run", lambda i: ["heart", "train", i.cohort, i.tmp / "r", "--style", i.run],
         lambda i: ("not a sono3d style",), lambda i: (i.tmp / "r",)),
    # heart cohort
    Case(COHORT, "--n 0", lambda i: ["heart", "cohort", i.tmp / "c", "--n", "0"], lambda i: ("--n",),
         lambda i: (i.tmp / "c",)),
    Case(COHORT, "--size 8", lambda i: ["heart", "cohort", i.tmp / "c", "--n", "1", "--size", "8"],
         lambda i: ("--size",), lambda i: (i.tmp / "c",)),
    Case(COHORT, "--workers 0", lambda i: ["heart", "cohort", i.tmp / "c", "--n", "1", "--workers", "0"],
         lambda i: ("workers",), lambda i: (i.tmp / "c",)),
    Case(COHORT, "output is a file", lambda i: ["heart", "cohort", i.text, "--n", "1", "--size", "16"],
         lambda i: (str(i.text), "not a folder")),
    Case(COHORT, "output folder of another program kept",
         lambda i: ["heart", "cohort", i.foreign, "--n", "1", "--size", "16", "--no-progress"],
         lambda i: (str(i.foreign), "not empty"), existing=lambda i: (i.foreign,)),
    Case(COHORT, "cohort of another seed kept",
         lambda i: ["heart", "cohort", i.cohort, "--n", "3", "--size", "32", "--seed", "9", "--no-progress"],
         lambda i: (str(i.cohort), "different cohort"), existing=lambda i: (i.cohort / "cohort.json",)),
    # heart correspond
    Case(CORRESPOND, "--blur 0", lambda i: ["heart", "correspond", i.cohort, "--blur", "0"], lambda i: ("--blur",)),
    Case(CORRESPOND, "--reach -1", lambda i: ["heart", "correspond", i.cohort, "--reach", "-1"],
         lambda i: ("--reach",)),
    Case(CORRESPOND, "--workers 0", lambda i: ["heart", "correspond", i.cohort, "--workers", "0"],
         lambda i: ("--workers",)),
    Case(CORRESPOND, "missing cohort", lambda i: ["heart", "correspond", i.tmp / "none"],
         lambda i: (str(i.tmp / "none"), "no such cohort folder")),
    Case(CORRESPOND, "folder of another program",
         lambda i: ["heart", "correspond", i.foreign, "--no-progress"], lambda i: (str(i.foreign), "no cases/"),
         existing=lambda i: (i.foreign,)),
    # heart evaluate
    Case(EVALUATE, "--resolution 4", lambda i: ["heart", "evaluate", i.run, i.cohort, i.tmp / "e", "--resolution",
                                                "4"], lambda i: ("--resolution",), lambda i: (i.tmp / "e",)),
    Case(EVALUATE, "missing run", lambda i: ["heart", "evaluate", i.tmp / "norun", i.cohort, i.tmp / "e"],
         lambda i: (str(i.tmp / "norun"), "no such run folder"), lambda i: (i.tmp / "e",)),
    Case(EVALUATE, "checkpoint with a pickle payload", lambda i: ["heart", "evaluate", i.run_evil, i.cohort,
                                                                  i.tmp / "e"],
         lambda i: ("checkpoint.pt", "Python objects"), lambda i: (i.tmp / "e",)),
    # heart show-case, correlate
    Case("heart show-case", "figure not a PNG",
         lambda i: ["heart", "show-case", i.cohort, "00000", i.tmp / "f.jpg"], lambda i: (str(i.tmp / "f.jpg"), ".png"),
         lambda i: (i.tmp / "f.jpg",)),
    Case("heart show-case", "unknown case", lambda i: ["heart", "show-case", i.cohort, "99999", i.tmp / "f.png"],
         lambda i: ("99999",), lambda i: (i.tmp / "f.png",)),
    Case("heart correlate", "missing table", lambda i: ["heart", "correlate", i.tmp / "t.csv", "--x", "a", "--y", "b"],
         lambda i: (str(i.tmp / "t.csv"),)),
    Case("heart correlate", "unknown column", lambda i: ["heart", "correlate", i.text, "--x", "a", "--y", "EF"],
         lambda i: ("EF",)),
    # sweep reconstruct
    Case(RECONSTRUCT, "missing sweep", lambda i: ["sweep", "reconstruct", i.tmp / "s.seq.nrrd", i.tmp / "o"],
         lambda i: (str(i.tmp / "s.seq.nrrd"),), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "truncated sweep", lambda i: ["sweep", "reconstruct", i.cut_sweep, i.tmp / "o"],
         lambda i: (str(i.cut_sweep),), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "single-frame sweep", lambda i: ["sweep", "reconstruct", i.one_frame, i.tmp / "o"],
         lambda i: ("2 frames",), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "PNG image as a sweep", lambda i: ["sweep", "reconstruct", i.png, i.tmp / "o"],
         lambda i: ("frames",), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "NaN in the frames", lambda i: ["sweep", "reconstruct", i.nan_sweep, i.tmp / "o"],
         lambda i: ("NaN",), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "--epochs 0", lambda i: ["sweep", "reconstruct", i.sweep, i.tmp / "o", "--epochs", "0"],
         lambda i: ("epochs",), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "unknown --preset", lambda i: ["sweep", "reconstruct", i.sweep, i.tmp / "o", "--preset", "x"],
         lambda i: ("preset", "'x'"), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "negative --spacing", lambda i: ["sweep", "reconstruct", i.sweep, i.tmp / "o", "--spacing",
                                                       "-1"], lambda i: ("--spacing",), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "--holdout 1", lambda i: ["sweep", "reconstruct", i.sweep, i.tmp / "o", "--holdout", "1"],
         lambda i: ("holdout",), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "--span auto with tracked poses",
         lambda i: ["sweep", "reconstruct", i.sweep, i.tmp / "o", "--poses", "tracked", "--span", "auto"],
         lambda i: ("--span auto", "--poses fan"), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "--span auto on frames without correlated speckle",
         lambda i: ["sweep", "reconstruct", i.untracked, i.tmp / "o", "--span", "auto", "--quiet"],
         lambda i: ("--span",), lambda i: (i.tmp / "o",)),
    # sweep compare
    Case(COMPARE, "sweep without poses and no --poses fan",
         lambda i: ["sweep", "compare", i.untracked, i.tmp / "o", "--quiet"],
         lambda i: (str(i.untracked), "no poses", "--poses fan --span"), lambda i: (i.tmp / "o",)),
    Case(COMPARE, "--holdout leaving 2 training frames",
         lambda i: ["sweep", "compare", i.three_frames, i.tmp / "o", "--holdout", "2", "--quiet"],
         lambda i: ("--holdout 2", "leaves 2 training", "at least 3"), lambda i: (i.tmp / "o",)),
    Case(COMPARE, "--span auto with tracked poses",
         lambda i: ["sweep", "compare", i.sweep, i.tmp / "o", "--poses", "tracked", "--span", "auto"],
         lambda i: ("--span auto", "--poses fan"), lambda i: (i.tmp / "o",)),
    Case(COMPARE, "--span neither degrees nor auto",
         lambda i: ["sweep", "compare", i.sweep, i.tmp / "o", "--span", "wide"],
         lambda i: ("--span", "wide"), lambda i: (i.tmp / "o",)),
    Case(COMPARE, "missing sweep", lambda i: ["sweep", "compare", i.tmp / "s.seq.nrrd", i.tmp / "o"],
         lambda i: (str(i.tmp / "s.seq.nrrd"),), lambda i: (i.tmp / "o",)),
    Case(COMPARE, "existing comparison kept when the sweep is corrupt",
         lambda i: ["sweep", "compare", i.cut_sweep, i.tmp / "out"], lambda i: (str(i.cut_sweep),),
         existing=lambda i: (i.tmp / "out" / "report.json",), setup=_existing_predict),
    # sweep compound, render
    Case(COMPOUND, "--spacing 0", lambda i: ["sweep", "compound", i.sweep, i.tmp / "v.nii.gz", "--spacing", "0"],
         lambda i: ("--spacing",), lambda i: (i.tmp / "v.nii.gz",)),
    Case(COMPOUND, "output of an unknown type", lambda i: ["sweep", "compound", i.sweep, i.tmp / "v.txt"],
         lambda i: (str(i.tmp / "v.txt"),), lambda i: (i.tmp / "v.txt",)),
    Case(COMPOUND, "missing sweep", lambda i: ["sweep", "compound", i.tmp / "s.seq.nrrd", i.tmp / "v.nii.gz"],
         lambda i: (str(i.tmp / "s.seq.nrrd"),), lambda i: (i.tmp / "v.nii.gz",)),
    Case(COMPOUND, "existing volume kept when the sweep is corrupt",
         lambda i: ["sweep", "compound", i.cut_sweep, i.tmp / "v.nii.gz"], lambda i: (str(i.cut_sweep),),
         existing=lambda i: (i.tmp / "v.nii.gz",), setup=_existing_file("v.nii.gz")),
    Case("sweep render", "corrupt Gaussians", lambda i: ["sweep", "render", i.bad_ply, i.sweep, i.tmp / "r.seq.nrrd"],
         lambda i: (str(i.bad_ply),), lambda i: (i.tmp / "r.seq.nrrd",)),
    # simulate, phantom, info
    Case("simulate sweep", "--frames 1", lambda i: ["simulate", "sweep", i.tmp / "ph", i.tmp / "s.seq.nrrd",
                                                    "--frames", "1"], lambda i: ("frames",),
         lambda i: (i.tmp / "s.seq.nrrd",)),
    Case("simulate sweep", "output of an unknown type", lambda i: ["simulate", "sweep", i.tmp / "ph", i.tmp / "s.txt"],
         lambda i: (str(i.tmp / "s.txt"),), lambda i: (i.tmp / "s.txt",)),
    Case("simulate sweep", "missing phantom", lambda i: ["simulate", "sweep", i.tmp / "ph.nii.gz",
                                                         i.tmp / "s.seq.nrrd"],
         lambda i: (str(i.tmp / "ph.nii.gz"),), lambda i: (i.tmp / "s.seq.nrrd",)),
    Case("phantom uterus", "--spacing 0", lambda i: ["phantom", "uterus", i.tmp / "p", "--spacing", "0"],
         lambda i: ("--spacing",), lambda i: (i.tmp / "p",)),
    Case("phantom uterus", "output is a file", lambda i: ["phantom", "uterus", i.text], lambda i: (str(i.text),)),
    Case("heart strain", "missing ED mesh", lambda i: ["heart", "strain", i.tmp / "ed.vtp",
                                                        i.cohort / "cases" / "00000" / "es.vtp"],
         lambda i: (str(i.tmp / "ed.vtp"),)),
    Case("heart strain", "bull's-eye not a PNG", lambda i: ["heart", "strain", i.cohort / "cases" / "00000" / "ed.vtp",
                                                            i.cohort / "cases" / "00000" / "es.vtp", "--bullseye",
                                                            i.tmp / "b.jpg"],
         lambda i: (str(i.tmp / "b.jpg"), ".png"), lambda i: (i.tmp / "b.jpg",)),
    Case("heart strain", "PNG given as a mesh", lambda i: ["heart", "strain", i.png, i.png],
         lambda i: (str(i.png),)),
    Case("heart fit-real", "missing beat", lambda i: ["heart", "fit-real", i.tmp / "beat", i.tmp / "o"],
         lambda i: (str(i.tmp / "beat"),), lambda i: (i.tmp / "o",)),
    Case("heart fit-real", "missing template", lambda i: ["heart", "fit-real", i.cohort, i.tmp / "o", "--template",
                                                          i.tmp / "t.vtp"],
         lambda i: (str(i.tmp / "t.vtp"), "no such template"), lambda i: (i.tmp / "o",)),
    Case("report", "missing result folder", lambda i: ["report", i.tmp / "none"],
         lambda i: (str(i.tmp / "none"), "no such result folder"), lambda i: (i.tmp / "none",)),
    Case("report", "--max-voxels 10", lambda i: ["report", i.run, "--max-voxels", "10"], lambda i: ("--max-voxels",),
         lambda i: (i.run / "report.html",)),
    Case("report", "missing --views", lambda i: ["report", i.run, "--views", i.tmp / "v.npz"],
         lambda i: ("--views", str(i.tmp / "v.npz")), lambda i: (i.run / "report.html",)),
    Case("report", "folder of another program", lambda i: ["report", i.foreign],
         lambda i: (str(i.foreign),), lambda i: (i.foreign / "report.html",)),
    Case("heart views", "no view given", lambda i: ["heart", "views", i.tmp / "v.npz"], lambda i: ("view",),
         lambda i: (i.tmp / "v.npz",)),
    Case("heart views", "output not an .npz", lambda i: ["heart", "views", i.tmp / "v.txt", "--a4c", i.png],
         lambda i: (str(i.tmp / "v.txt"), ".npz"), lambda i: (i.tmp / "v.txt",)),
    Case("heart views", "pickle given as frames", lambda i: ["heart", "views", i.tmp / "v.npz", "--a4c", i.pickle],
         lambda i: (str(i.pickle),), lambda i: (i.tmp / "v.npz",)),
    Case("heart views", "missing recording", lambda i: ["heart", "views", i.tmp / "v.npz", "--a4c",
                                                        i.tmp / "a4c.mp4"],
         lambda i: (str(i.tmp / "a4c.mp4"),), lambda i: (i.tmp / "v.npz",)),
    # style train
    Case(STYLE_TRAIN, "a source that gives no frames", _style_train("empty_dir"), lambda i: (str(i.empty_dir),),
         lambda i: (i.tmp / "r",)),
    Case(STYLE_TRAIN, "frames of one value", _style_train("flat_views"), lambda i: (str(i.flat_views), "one value"),
         lambda i: (i.tmp / "r",)),
    Case(STYLE_TRAIN, "pickle given as a source", _style_train("pickle"), lambda i: (str(i.pickle), "pickle"),
         lambda i: (i.tmp / "r",)),
    Case(STYLE_TRAIN, "--size 30", _style_train("views", "--size", "30"), lambda i: ("--size",),
         lambda i: (i.tmp / "r",)),
    Case(STYLE_TRAIN, "unknown --config", _style_train("views", "--config", "huge"), lambda i: ("--config", "huge"),
         lambda i: (i.tmp / "r",)),
    Case(STYLE_TRAIN, "--epochs 0", _style_train("views", "--epochs", "0"), lambda i: ("--epochs",),
         lambda i: (i.tmp / "r",)),
    Case(STYLE_TRAIN, "folder of another program as the cohort",
         lambda i: ["style", "train", i.views, i.foreign, i.tmp / "r", "--size", "32"],
         lambda i: (str(i.foreign), "not a generated heart cohort"), lambda i: (i.tmp / "r",)),
    Case(STYLE_TRAIN, "only a cohort and a run folder", lambda i: ["style", "train", i.cohort, i.tmp / "r"],
         lambda i: ("REAL",), lambda i: (i.tmp / "r",)),
    Case(STYLE_TRAIN, "run folder is a file", _style_train("views", run="table.csv"),
         lambda i: ("table.csv", "not a folder"), setup=_existing_file("table.csv"),
         existing=lambda i: (i.tmp / "table.csv",)),
    Case(STYLE_TRAIN, "--resume with nothing to resume", _style_train("views", "--resume"),
         lambda i: (str(i.tmp / "r"), "no checkpoint to resume"), lambda i: (i.tmp / "r",)),
    Case(STYLE_TRAIN, "existing run kept without --resume", _style_train("views", run="run"),
         lambda i: (str(i.tmp / "run"), "already holds a style run", "--resume"),
         existing=lambda i: (i.tmp / "run",), setup=_existing_style_run),
    Case(STYLE_TRAIN, "resumed with other real frames",
         lambda i: ["style", "train", i.cohort / "cases" / "00002" / "views.npz", i.cohort, i.tmp / "run", "--size",
                    "32", "--resume", "--no-progress"],
         lambda i: ("real images differ", str(i.tmp / "run")), existing=lambda i: (i.tmp / "run",),
         setup=_existing_style_run),
    # style apply
    Case(STYLE_APPLY, "run folder of another model", _style_apply(run="run"), lambda i: ("not a sono3d style",),
         lambda i: (i.tmp / "o.npz",)),
    Case(STYLE_APPLY, "missing run folder", lambda i: ["style", "apply", i.tmp / "norun", i.views, i.tmp / "o.npz"],
         lambda i: (str(i.tmp / "norun"), "no such style run"), lambda i: (i.tmp / "o.npz",)),
    Case(STYLE_APPLY, "views of another size than the run's", _style_apply("big_views"), lambda i: ("64x64", "32x32"),
         lambda i: (i.tmp / "o.npz",)),
    Case(STYLE_APPLY, "unknown --direction", _style_apply("views", "style_run", "o.npz", "--direction", "up"),
         lambda i: ("--direction", "up"), lambda i: (i.tmp / "o.npz",)),
    Case(STYLE_APPLY, "views file into a PNG", _style_apply(out="o.png"), lambda i: (str(i.tmp / "o.png"), ".npz"),
         lambda i: (i.tmp / "o.png",)),
    Case(STYLE_APPLY, "pickle given as views", _style_apply("pickle"), lambda i: (str(i.pickle), "pickle"),
         lambda i: (i.tmp / "o.npz",)),
    Case(STYLE_APPLY, "NaN pixel in the views", _style_apply("nan_views"), lambda i: (str(i.nan_views), "NaN"),
         lambda i: (i.tmp / "o.npz",)),
    Case(STYLE_APPLY, "existing output kept when the views are bad", _style_apply("cut_npz"),
         lambda i: (str(i.cut_npz),), existing=lambda i: (i.tmp / "o.npz",), setup=_existing_file("o.npz")),
    # style gap (writes nothing)
    Case(STYLE_GAP, "--epochs 0", _style_gap("--epochs", "0"), lambda i: ("--epochs",)),
    Case(STYLE_GAP, "unknown view in --views", _style_gap("--views", "a5c"), lambda i: ("--views", "a5c")),
    Case(STYLE_GAP, "unknown --direction", _style_gap("--direction", "up"), lambda i: ("--direction", "up")),
    Case(STYLE_GAP, "table given as the synthetic set",
         lambda i: ["style", "gap", i.views, "--synthetic", i.text], lambda i: (str(i.text), "synthetic set")),
    Case(STYLE_GAP, "frames of one value", lambda i: ["style", "gap", i.flat_views, "--synthetic", i.cohort,
                                                      "--split", "all", "--view-size", "32"],
         lambda i: (str(i.flat_views), "one value")),
    Case(STYLE_GAP, "heart run as --style", lambda i: [*_style_gap()(i), "--style", i.run],
         lambda i: ("not a sono3d style",)),
    Case("demo", "--out is a file", lambda i: ["demo", "--out", i.text, "--quiet"], lambda i: (str(i.text),)),
    Case("info", "missing file", lambda i: ["info", i.tmp / "x.nii.gz"], lambda i: (str(i.tmp / "x.nii.gz"),)),
    Case("info", "header claiming 4e13 bytes", lambda i: ["info", i.huge_mha], lambda i: (str(i.huge_mha),)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused(case: Case, i):
    if case.setup is not None:
        case.setup(i)
    before = snapshot(*case.existing(i))
    res = runner.invoke(app, [str(a) for a in case.args(i)])
    refused(res, *case.words(i), absent=case.absent(i), unchanged=before)
    assert not Path("PWNED").exists() and not (i.tmp / "PWNED").exists()  # no payload ran


def test_every_verb_has_cases():
    """Each verb of the CLI appears in the catalogue (a new verb must add its rows)."""
    group = typer.main.get_command(app)

    def verbs(cmd: Any, prefix: str = "") -> list[str]:
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            return [v for name, sub in cmd.commands.items() for v in verbs(sub, f"{prefix}{name} ")]
        return [prefix.strip()]

    covered = {c.verb for c in CASES}
    missing = sorted(set(verbs(group)) - covered)
    assert not missing, f"verbs without bad-input cases: {missing}"
