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

import gzip
import json
import pickle
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
    # several sweeps, one volume: a second sweep, plan files and true transforms that do not fit
    s.sweep_b = root / "sweep_b.seq.nrrd"
    shutil.copy(s.sweep, s.sweep_b)
    s.plan_other = bad / "plan_other.json"
    s.plan_other.write_text('{"sweeps": {"missing.seq.nrrd": {"span": 90}}}')
    s.plan_unknown = bad / "plan_unknown.json"
    s.plan_unknown.write_text('{"sweeps": {"sweep_b": {"speed": 3}}}')
    s.one_transform = bad / "one_transform.json"
    s.one_transform.write_text(json.dumps({"to_first": [np.eye(4).tolist()]}))
    return s


@pytest.fixture(scope="module")
def headers(shared) -> SimpleNamespace:
    """Bad file headers and geometry, each a few bytes edited or a few voxels written: sweeps whose
    poses do not match their frames or are not rigid, zero and negative spacings, sizes a file
    cannot hold, NaN/Inf in meshes and Gaussians, a mesh where a volume is expected."""
    import nibabel as nib
    import pyvista as pv

    from sono3d.io import read_sweep, write_mesh, write_volume
    from sono3d.sweep.gaussians import Gaussians, save_ply
    from sono3d.types import Volume

    d = shared.root / "headers"
    d.mkdir()
    h = SimpleNamespace()
    sweep = read_sweep(shared.sweep)
    poses = sweep.image_to_world.copy()
    poses[3, :3, 0] *= 2.0  # frame 3's columns twice as long as its spacing says
    h.nonrigid_sweep = write_sweep(d / "nonrigid.seq.nrrd", replace(sweep, image_to_world=poses))
    data = shared.sweep.read_bytes()
    cut = data.index(b"\n\n")
    head, body = data[:cut].decode("latin-1"), data[cut:]

    def edited(name: str, pattern: str, new: str) -> Path:
        text, n = re.subn(pattern, new, head)
        assert n == 1, pattern
        (d / name).write_bytes(text.encode("latin-1") + body)
        return d / name

    last = re.search(r"Seq_Frame0011_ImageToReferenceTransform:=(.*)", head).group(1)
    h.pose_missing = edited("pose_missing.seq.nrrd", r"Seq_Frame0011_ImageToReferenceTransform:=.*\n", "")
    h.pose_extra = edited("pose_extra.seq.nrrd", r"(Seq_Frame0011_ImageStatus:=OK)",
                          f"\\1\nSeq_Frame0012_ImageToReferenceTransform:={last}")
    h.sweep_zero_spacing = edited("zero.seq.nrrd", r"sono3d_spacing_mm:=.*", "sono3d_spacing_mm:=0 0.5")
    h.sweep_negative_spacing = edited("negative.seq.nrrd", r"sono3d_spacing_mm:=.*", "sono3d_spacing_mm:=-0.5 0.5")
    h.pose_folder = d / "frames"  # three images, two poses
    h.pose_folder.mkdir()
    for k in range(3):
        Image.fromarray(np.full((20, 20), 40 * (k + 1), np.uint8)).save(h.pose_folder / f"f{k}.png")
    np.save(h.pose_folder / "poses.npy", np.tile(np.eye(4), (2, 1, 1)))

    a = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    h.volume = write_volume(d / "volume.nii.gz", Volume(a, np.diag([2.0, 2.0, 2.0, 1.0])))
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(a.shape)
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 352
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]  # i has no length
    h.nifti_zero_sform = d / "zero_sform.nii"
    h.nifti_zero_sform.write_bytes(hdr.binaryblock + b"\0" * 4 + a.tobytes(order="F"))
    hdr["sform_code"] = 0
    for name, dims in (("nifti_zero_pixdim", [0, 1, 1]), ("nifti_negative_pixdim", [-1, 1, 1])):
        hdr["pixdim"][1:4] = dims
        setattr(h, name, d / f"{name}.nii.gz")
        getattr(h, name).write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4 + a.tobytes(order="F")))
    hdr.set_data_shape((30000, 30000, 30000))  # 108 TB of float32 in a 356-byte file
    hdr["pixdim"][1:4] = 1
    h.huge_nii = d / "huge.nii"
    h.huge_nii.write_bytes(hdr.binaryblock + b"\0" * 4)
    h.huge_nii_gz = d / "huge.nii.gz"
    h.huge_nii_gz.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4))
    h.nrrd_zero_spacing, h.nrrd_negative_spacing = d / "zero.nrrd", d / "negative.nrrd"
    nrrd.write(str(h.nrrd_zero_spacing), a, {"spacings": [0.0, 1.0, 1.0]})
    nrrd.write(str(h.nrrd_negative_spacing), a, {"spacings": [-1.0, 1.0, 1.0]})
    h.mha_negative_spacing = d / "negative.mha"
    h.mha_negative_spacing.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 6 5 4\nElementSpacing = -1 1 1\n"
                                       b"ElementType = MET_FLOAT\nElementDataFile = LOCAL\n" + a.tobytes())
    h.huge_nrrd, h.huge_seq = d / "huge.nrrd", d / "huge.seq.nrrd"
    h.huge_nrrd.write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 100000 100000 1000\nencoding: gzip\n"
                           "endian: little\n\n")
    h.huge_seq.write_text("NRRD0004\ntype: float\ndimension: 4\nsizes: 100000 100000 1 1000\n"
                          "kinds: domain domain domain list\nencoding: raw\nendian: little\n\n")

    sphere = pv.Sphere(theta_resolution=8, phi_resolution=8)
    h.mesh = write_mesh(d / "mesh.vtp", sphere)
    bad = sphere.copy()
    bad.points[3] = np.nan
    h.nan_vtp = write_mesh(d / "nan.vtp", bad)
    bad.points[3] = [0.0, np.inf, 0.0]
    h.inf_vtk = write_mesh(d / "inf.vtk", bad)
    bad.save(d / "inf.ply")
    h.inf_ply = d / "inf.ply"
    h.nan_beat = d / "nan_beat"  # a biv-me-named beat whose ES mesh has a NaN vertex
    h.nan_beat.mkdir()
    write_mesh(h.nan_beat / "case_LV_ENDOCARDIAL_000.vtk", sphere)
    shutil.copy(h.nan_vtp, h.nan_beat / "case_LV_ENDOCARDIAL_001.vtp")
    n, rng = 20, np.random.default_rng(0)
    t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32))  # noqa: E731
    means = rng.normal(0, 8, (n, 3))

    def gaussians(name: str, m: np.ndarray) -> Path:
        return save_ply(d / name, Gaussians(means=t(m), log_scales=t(np.zeros((n, 3))),
                                            quats=t(np.tile([1.0, 0, 0, 0], (n, 1))),
                                            opacity_logits=t(rng.normal(0, 1, n)), intensities=t(rng.random(n))))
    h.gaussians = gaussians("g.ply", means)
    means[2, 1] = np.nan
    h.nan_gaussians = gaussians("nan_g.ply", means)
    return h


@pytest.fixture
def i(shared, headers, tmp_path) -> SimpleNamespace:
    """The shared inputs plus this case's own folder ``tmp`` for outputs."""
    return SimpleNamespace(**vars(shared), **vars(headers), tmp=tmp_path)


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
         lambda i: ("--device tpu",), lambda i: (i.tmp / "r",)),
    Case(TRAIN, "unknown --model", lambda i: ["heart", "train", i.cohort, i.tmp / "r", "--model", "nerf"],
         lambda i: ("--model nerf",), lambda i: (i.tmp / "r",)),
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
         lambda i: ("--workers 0",), lambda i: (i.tmp / "c",)),
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
         lambda i: ("--epochs 0",), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "unknown --preset", lambda i: ["sweep", "reconstruct", i.sweep, i.tmp / "o", "--preset", "x"],
         lambda i: ("--preset x", "'x'"), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "negative --spacing", lambda i: ["sweep", "reconstruct", i.sweep, i.tmp / "o", "--spacing",
                                                       "-1"], lambda i: ("--spacing",), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "--holdout 1", lambda i: ["sweep", "reconstruct", i.sweep, i.tmp / "o", "--holdout", "1"],
         lambda i: ("--holdout 1",), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "--span auto with tracked poses",
         lambda i: ["sweep", "reconstruct", i.sweep, i.tmp / "o", "--poses", "tracked", "--span", "auto"],
         lambda i: ("--span auto", "--poses fan"), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "--span auto on frames without correlated speckle",
         lambda i: ["sweep", "reconstruct", i.untracked, i.tmp / "o", "--span", "auto", "--quiet"],
         lambda i: ("--span",), lambda i: (i.tmp / "o",)),
    # sweep reconstruct, several sweeps
    Case(RECONSTRUCT, "plan naming a sweep not given",
         lambda i: ["sweep", "reconstruct", i.sweep, i.sweep_b, i.tmp / "o", "--plan", i.plan_other],
         lambda i: (str(i.plan_other), "missing.seq.nrrd", "not among the sweeps"), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "plan with an unknown option",
         lambda i: ["sweep", "reconstruct", i.sweep, i.sweep_b, i.tmp / "o", "--plan", i.plan_unknown],
         lambda i: (str(i.plan_unknown), "speed"), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "missing plan file",
         lambda i: ["sweep", "reconstruct", i.sweep, i.sweep_b, i.tmp / "o", "--plan", i.tmp / "plan.json"],
         lambda i: (str(i.tmp / "plan.json"), "does not exist"), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "second sweep missing",
         lambda i: ["sweep", "reconstruct", i.sweep, i.tmp / "b.seq.nrrd", i.tmp / "o"],
         lambda i: (str(i.tmp / "b.seq.nrrd"),), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "one true transform for two sweeps",
         lambda i: ["sweep", "reconstruct", i.sweep, i.sweep_b, i.tmp / "o", "--truth-transform", i.one_transform],
         lambda i: (str(i.one_transform), "1 transforms for 2 sweeps"), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "--register with one sweep",
         lambda i: ["sweep", "reconstruct", i.sweep, i.tmp / "o", "--register"],
         lambda i: ("--register", "two or more sweeps"), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "no sweep before the folder", lambda i: ["sweep", "reconstruct", i.tmp / "o"],
         lambda i: ("SWEEP", "output folder"), lambda i: (i.tmp / "o",)),
    Case(RECONSTRUCT, "--span auto with several sweeps",
         lambda i: ["sweep", "reconstruct", i.sweep, i.sweep_b, i.tmp / "o", "--span", "auto"],
         lambda i: ("--span auto", "several sweeps"), lambda i: (i.tmp / "o",)),
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
                                                    "--frames", "1"], lambda i: ("--frames 1",),
         lambda i: (i.tmp / "s.seq.nrrd",)),
    Case("simulate sweep", "output of an unknown type", lambda i: ["simulate", "sweep", i.tmp / "ph", i.tmp / "s.txt"],
         lambda i: (str(i.tmp / "s.txt"),), lambda i: (i.tmp / "s.txt",)),
    Case("simulate sweep", "missing phantom", lambda i: ["simulate", "sweep", i.tmp / "ph.nii.gz",
                                                         i.tmp / "s.seq.nrrd"],
         lambda i: (str(i.tmp / "ph.nii.gz"),), lambda i: (i.tmp / "s.seq.nrrd",)),
    Case("simulate sweep-pair", "--offset-deg 200", lambda i: ["simulate", "sweep-pair", i.tmp / "ph", i.tmp / "p",
                                                                "--offset-deg", "200"],
         lambda i: ("--offset-deg",), lambda i: (i.tmp / "p",)),
    Case("simulate sweep-pair", "--frames 1", lambda i: ["simulate", "sweep-pair", i.tmp / "ph", i.tmp / "p",
                                                         "--frames", "1"], lambda i: ("frames",), lambda i: (i.tmp / "p",)),
    Case("simulate sweep-pair", "missing phantom", lambda i: ["simulate", "sweep-pair", i.tmp / "ph.nii.gz",
                                                              i.tmp / "p"],
         lambda i: (str(i.tmp / "ph.nii.gz"),), lambda i: (i.tmp / "p",)),
    Case("simulate sweep-pair", "output is a file", lambda i: ["simulate", "sweep-pair", i.tmp / "ph", i.text],
         lambda i: (str(i.text), "not a folder")),
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


# ---------------------------------------------------------------- issue 19, catalogue phase (the `headers` fixture)
# Poses that do not match the frames or are not rigid, zero/negative spacing and impossible sizes in
# headers, NaN/Inf in meshes and Gaussians, a mesh where a volume is expected and the reverse, a
# baseline of another model kind, and engine checks that must name the option the user typed.

def _absent(name: str) -> Callable[[Any], tuple]:
    return lambda i: (i.tmp / name,)


def _named(attr: str, *words: str) -> Callable[[Any], tuple]:
    return lambda i: (str(getattr(i, attr)), *words)


def _reconstruct(sweep: str, *options: Any) -> Callable[[Any], list]:
    return lambda i: ["sweep", "reconstruct", getattr(i, sweep), i.tmp / "o", "--epochs", "1", "--quiet",
                      *[getattr(i, o[1:]) if str(o).startswith("@") else o for o in options]]


def _compound(sweep: str, *options: str) -> Callable[[Any], list]:
    return lambda i: ["sweep", "compound", getattr(i, sweep), i.tmp / "v.nii.gz", *options]


def _render(gaussians: str, sweep: str) -> Callable[[Any], list]:
    return lambda i: ["sweep", "render", getattr(i, gaussians), getattr(i, sweep), i.tmp / "r.seq.nrrd"]


def _info(attr: str) -> Callable[[Any], list]:
    return lambda i: ["info", getattr(i, attr)]


def _simulate(phantom: str, *options: str) -> Callable[[Any], list]:
    return lambda i: ["simulate", "sweep", getattr(i, phantom), i.tmp / "s.seq.nrrd", "--frames", "4", "--size", "32",
                      *options]


def _evaluate(*options: Any) -> Callable[[Any], list]:
    return lambda i: ["heart", "evaluate", i.run, i.cohort, i.tmp / "e",
                      *[getattr(i, o[1:]) if str(o).startswith("@") else o for o in options]]


NOT_RIGID = ("not rigid", "scales pixels")
MISMATCH = ("poses do not match frames",)
CLAIMS = ("header claims", "not read")

CASES += [
    # sweep reconstruct
    Case(RECONSTRUCT, "non-rigid pose in the sweep file", _reconstruct("nonrigid_sweep"),
         _named("nonrigid_sweep", *NOT_RIGID), _absent("o")),
    Case(RECONSTRUCT, "a frame without its transform", _reconstruct("pose_missing"),
         _named("pose_missing", *MISMATCH, "11 of the 12"), _absent("o")),
    Case(RECONSTRUCT, "a transform for a frame the file lacks", _reconstruct("pose_extra"),
         _named("pose_extra", *MISMATCH, "frame 12"), _absent("o")),
    Case(RECONSTRUCT, "image folder with fewer poses than images", _reconstruct("pose_folder"),
         lambda i: (str(i.pose_folder / "poses.npy"), "2 poses but 3 images"), _absent("o")),
    Case(RECONSTRUCT, "zero pixel spacing in the header", _reconstruct("sweep_zero_spacing"),
         _named("sweep_zero_spacing", "spacing must be positive"), _absent("o")),
    Case(RECONSTRUCT, "a mesh given as the sweep", _reconstruct("mesh"), _named("mesh", "mesh, not a sweep"),
         _absent("o")),
    Case(RECONSTRUCT, "a mesh given as --truth", _reconstruct("sweep", "--truth", "@mesh"),
         _named("mesh", "mesh, not a volume"), _absent("o")),
    Case(RECONSTRUCT, "--truth with a zero-length voxel axis", _reconstruct("sweep", "--truth", "@nifti_zero_sform"),
         _named("nifti_zero_sform", "singular", "positive voxel spacing"), _absent("o")),
    Case(RECONSTRUCT, "--truth claiming 108 TB", _reconstruct("sweep", "--truth", "@huge_nii"),
         _named("huge_nii", *CLAIMS), _absent("o")),
    Case(RECONSTRUCT, "--gaussians-per-slice 0", _reconstruct("sweep", "--gaussians-per-slice", "0"),
         lambda i: ("--gaussians-per-slice 0",), _absent("o")),
    Case(RECONSTRUCT, "--batch 0", _reconstruct("sweep", "--batch", "0"), lambda i: ("--batch 0",), _absent("o")),
    Case(RECONSTRUCT, "unknown --device", _reconstruct("sweep", "--device", "tpu"), lambda i: ("--device tpu",),
         _absent("o")),
    Case(RECONSTRUCT, "existing output kept when the poses are not rigid",
         lambda i: ["sweep", "reconstruct", i.nonrigid_sweep, i.tmp / "o.nii.gz", "--quiet"],
         _named("nonrigid_sweep", *NOT_RIGID), existing=lambda i: (i.tmp / "o.nii.gz",),
         setup=_existing_file("o.nii.gz")),
    # sweep compound
    Case(COMPOUND, "non-rigid pose in the sweep file", _compound("nonrigid_sweep"),
         _named("nonrigid_sweep", *NOT_RIGID), _absent("v.nii.gz")),
    Case(COMPOUND, "a transform for a frame the file lacks", _compound("pose_extra"),
         _named("pose_extra", *MISMATCH), _absent("v.nii.gz")),
    Case(COMPOUND, "image folder with fewer poses than images", _compound("pose_folder"),
         lambda i: (str(i.pose_folder / "poses.npy"), "2 poses but 3 images"), _absent("v.nii.gz")),
    Case(COMPOUND, "negative pixel spacing in the header", _compound("sweep_negative_spacing"),
         _named("sweep_negative_spacing", "spacing must be positive"), _absent("v.nii.gz")),
    Case(COMPOUND, "header claiming 40 TB of frames", _compound("huge_seq"), _named("huge_seq", *CLAIMS),
         _absent("v.nii.gz")),
    Case(COMPOUND, "a volume given as the sweep", _compound("volume"), _named("volume", "volume, not a sweep"),
         _absent("v.nii.gz")),
    Case(COMPOUND, "unknown --method", _compound("sweep", "--method", "foo"), lambda i: ("--method foo",),
         _absent("v.nii.gz")),
    Case(COMPOUND, "existing volume kept when the poses are not rigid", _compound("nonrigid_sweep"),
         _named("nonrigid_sweep", *NOT_RIGID), existing=_absent("v.nii.gz"), setup=_existing_file("v.nii.gz")),
    # sweep compare
    Case(COMPARE, "non-rigid pose in the sweep file",
         lambda i: ["sweep", "compare", i.nonrigid_sweep, i.tmp / "o", "--quiet"],
         _named("nonrigid_sweep", *NOT_RIGID), _absent("o")),
    Case(COMPARE, "a transform for a frame the file lacks",
         lambda i: ["sweep", "compare", i.pose_extra, i.tmp / "o", "--quiet"], _named("pose_extra", *MISMATCH),
         _absent("o")),
    Case(COMPARE, "--epochs 0", lambda i: ["sweep", "compare", i.sweep, i.tmp / "o", "--epochs", "0"],
         lambda i: ("--epochs 0",), _absent("o")),
    # sweep render (reads the sweep's poses)
    Case("sweep render", "non-rigid pose in the sweep file", _render("gaussians", "nonrigid_sweep"),
         _named("nonrigid_sweep", *NOT_RIGID), _absent("r.seq.nrrd")),
    Case("sweep render", "a frame without its transform", _render("gaussians", "pose_missing"),
         _named("pose_missing", *MISMATCH), _absent("r.seq.nrrd")),
    Case("sweep render", "zero pixel spacing in the header", _render("gaussians", "sweep_zero_spacing"),
         _named("sweep_zero_spacing", "spacing must be positive"), _absent("r.seq.nrrd")),
    Case("sweep render", "NaN in the Gaussians", _render("nan_gaussians", "sweep"),
         _named("nan_gaussians", "NaN"), _absent("r.seq.nrrd")),
    Case("sweep render", "a VTK mesh given as the Gaussians", _render("mesh", "sweep"),
         _named("mesh", "not a PLY file"), _absent("r.seq.nrrd")),
    Case("sweep render", "a volume given as the sweep", _render("gaussians", "volume"),
         _named("volume", "volume, not a sweep"), _absent("r.seq.nrrd")),
    # info: every header kind
    Case("info", "NIfTI with a zero voxel size", _info("nifti_zero_pixdim"),
         _named("nifti_zero_pixdim", "pixdim", "must be positive")),
    Case("info", "NIfTI with a negative voxel size", _info("nifti_negative_pixdim"),
         _named("nifti_negative_pixdim", "pixdim", "must be positive")),
    Case("info", "NIfTI whose sform has a zero-length axis", _info("nifti_zero_sform"),
         _named("nifti_zero_sform", "singular")),
    Case("info", "NRRD with zero spacing", _info("nrrd_zero_spacing"),
         _named("nrrd_zero_spacing", "spacings must be positive")),
    Case("info", "NRRD with negative spacing", _info("nrrd_negative_spacing"),
         _named("nrrd_negative_spacing", "spacings must be positive")),
    Case("info", "MetaImage with negative spacing", _info("mha_negative_spacing"),
         _named("mha_negative_spacing", "ElementSpacing must be positive")),
    Case("info", "NIfTI claiming 108 TB", _info("huge_nii"), _named("huge_nii", *CLAIMS)),
    Case("info", "gzipped NIfTI claiming 108 TB", _info("huge_nii_gz"), _named("huge_nii_gz", *CLAIMS, "compressed")),
    Case("info", "gzipped NRRD claiming 40 TB", _info("huge_nrrd"), _named("huge_nrrd", *CLAIMS)),
    Case("info", "NaN vertex in a .vtp", _info("nan_vtp"), _named("nan_vtp", "NaN or infinite")),
    Case("info", "Inf vertex in a .vtk", _info("inf_vtk"), _named("inf_vtk", "NaN or infinite")),
    Case("info", "Inf vertex in a .ply", _info("inf_ply"), _named("inf_ply", "NaN or infinite")),
    Case("info", "sweep with a frame without its transform", _info("pose_missing"), _named("pose_missing", *MISMATCH)),
    # simulate sweep: a volume read as the phantom
    Case("simulate sweep", "a mesh given as the phantom", _simulate("mesh"), _named("mesh", "mesh, not a volume"),
         _absent("s.seq.nrrd")),
    Case("simulate sweep", "phantom NRRD with negative spacing", _simulate("nrrd_negative_spacing"),
         _named("nrrd_negative_spacing", "spacings must be positive"), _absent("s.seq.nrrd")),
    Case("simulate sweep", "phantom NIfTI claiming 108 TB", _simulate("huge_nii_gz"), _named("huge_nii_gz", *CLAIMS),
         _absent("s.seq.nrrd")),
    Case("simulate sweep", "--size 2", _simulate("volume", "--size", "2"), lambda i: ("--size 2",),
         _absent("s.seq.nrrd")),
    # meshes: heart strain, fit-real, correspond
    Case("heart strain", "NaN vertex in the ED mesh", lambda i: ["heart", "strain", i.nan_vtp, i.mesh],
         _named("nan_vtp", "NaN or infinite")),
    Case("heart strain", "Inf vertex in the ES mesh",
         lambda i: ["heart", "strain", i.cohort / "cases" / "00000" / "ed.vtp", i.inf_ply],
         _named("inf_ply", "NaN or infinite")),
    Case("heart strain", "a volume given as a mesh", lambda i: ["heart", "strain", i.volume, i.volume],
         _named("volume", "volume, not a mesh")),
    Case("heart fit-real", "a beat with a NaN vertex", lambda i: ["heart", "fit-real", i.nan_beat, i.tmp / "o"],
         lambda i: ("nan", "NaN or infinite"), _absent("o")),
    Case("heart fit-real", "--template with a NaN vertex",
         lambda i: ["heart", "fit-real", i.nan_beat, i.tmp / "o", "--template", i.nan_vtp],
         _named("nan_vtp", "NaN or infinite"), _absent("o")),
    Case("heart fit-real", "a volume given as --template",
         lambda i: ["heart", "fit-real", i.nan_beat, i.tmp / "o", "--template", i.volume],
         _named("volume", "volume, not a mesh"), _absent("o")),
    Case(CORRESPOND, "--template with a NaN vertex", lambda i: ["heart", "correspond", i.cohort, "--template", i.nan_vtp],
         _named("nan_vtp", "NaN or infinite"), existing=lambda i: (i.cohort,)),
    Case(CORRESPOND, "a volume given as --template",
         lambda i: ["heart", "correspond", i.cohort, "--template", i.volume],
         _named("volume", "volume, not a mesh"), existing=lambda i: (i.cohort,)),
    # heart evaluate --baseline of another model kind
    Case(EVALUATE, "--baseline an S2MNet run", _evaluate("--baseline", "@run"), lambda i: (str(i.run), "voxel"),
         _absent("e")),
    Case(EVALUATE, "--baseline a style run", _evaluate("--baseline", "@style_run"),
         lambda i: (str(i.style_run), "voxel"), _absent("e")),
    Case(EVALUATE, "--baseline with a pickle payload", _evaluate("--baseline", "@run_evil"),
         lambda i: ("checkpoint.pt", "Python objects"), _absent("e")),
    # options named as typed
    Case("phantom uterus", "--border -1", lambda i: ["phantom", "uterus", i.tmp / "p", "--border", "-1"],
         lambda i: ("--border -1",), _absent("p")),
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


def test_option_named_only_when_the_message_is_about_it(i):
    """The CLI puts the option typed in front of an engine check that speaks of its setting, never in
    front of a file's fault that happens to use the same word (the header's pixel spacing here)."""
    res = runner.invoke(app, [str(a) for a in _compound("sweep_negative_spacing", "--spacing", "0.5")(i)])
    line = refused(res, str(i.sweep_negative_spacing), "spacing must be positive", absent=_absent("v.nii.gz")(i))
    assert line.startswith(f"error: {i.sweep_negative_spacing}: "), line
    res = runner.invoke(app, [str(a) for a in _reconstruct("sweep", "--epochs", "0")(i)])  # the last --epochs counts
    assert refused(res, absent=_absent("o")(i)).startswith("error: --epochs 0: epochs must be at least 1")
