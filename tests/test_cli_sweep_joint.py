"""`sono3d simulate sweep-pair` and `sono3d sweep reconstruct SWEEP SWEEP OUT_DIR` on small generated sweeps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.errors import InputError
from sono3d.geometry.transforms import invert_rigid
from sono3d.io import read_sweep, write_sweep, write_volume
from sono3d.phantoms import build_uterus
from sono3d.simulate.slicing import sample_planes
from sono3d.simulate.sweep_pair import SweepPairConfig, simulate_sweep_pair, write_sweep_pair
from sono3d.sweep.joint_export import read_plan, read_truth_transforms, sweep_names
from sono3d.sweep.poses import fan_prior_poses
from sono3d.types import Sweep, Volume

runner = CliRunner()
SMALL = ["--preset", "small", "--epochs", "2", "--gaussians-per-slice", "10", "--quiet"]


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    phantom = build_uterus(seed=0, mesh=False, spacing_mm=1.5)
    write_volume(d / "labels.nii.gz", phantom.labels)
    pair = simulate_sweep_pair(phantom, SweepPairConfig(frames=16, size_px=48, seed=1))
    write_sweep_pair(pair, d / "pair")
    # the same pair with b at another frame size (another pixel spacing)
    other = simulate_sweep_pair(phantom, SweepPairConfig(frames=16, size_px=40, seed=1))
    write_sweep(d / "pair" / "b40.seq.nrrd", other.b)
    # a sweep of unrelated content (random blobs), in the place of b
    rng = np.random.default_rng(5)
    lab = phantom.labels
    noise = ndimage.gaussian_filter(rng.random(lab.shape), 2.0)
    blobs = Volume(((noise > np.quantile(noise, 0.97)) * 0.8).astype(np.float32), lab.affine)
    world = np.asarray(pair.record["sweeps"]["b"]["poses_world"])
    frames = sample_planes(blobs, world, pair.b.shape)
    write_sweep(d / "pair" / "blobs.seq.nrrd", Sweep(np.nan_to_num(frames), pair.b.image_to_world, pair.b.spacing_mm,
                                                     pair.b.sector, {"pose_frame": "own"}))
    return d


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_simulate_sweep_pair_writes_two_sweeps_in_their_own_frames(pair_dir, tmp_path):
    out = tmp_path / "p"
    res = _run("simulate", "sweep-pair", pair_dir / "labels.nii.gz", out, "--frames", "8", "--size", "32",
               "--offset-mm", "10", "--offset-deg", "20", "--seed", "4")
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "truth.json").read_text())
    a, b = read_sweep(out / "a.seq.nrrd"), read_sweep(out / "b.seq.nrrd")
    assert a.meta["pose_frame"] == "own" and b.meta["direction"] == "transversal"
    prior = fan_prior_poses(8, a.shape, a.spacing_mm, 120.0)
    np.testing.assert_allclose(a.image_to_world, prior, atol=1e-5)  # own frame = the sensorless fan prior
    np.testing.assert_allclose(b.image_to_world, prior, atol=1e-5)
    T = np.asarray(rec["b_to_a"])
    Fa, Fb = (np.asarray(rec["sweeps"][k]["frame_to_world"]) for k in ("a", "b"))
    for part, sw, F in (("a", a, Fa), ("b", b, Fb)):
        np.testing.assert_allclose(F[None] @ sw.image_to_world, rec["sweeps"][part]["poses_world"], atol=1e-4)
    np.testing.assert_allclose(invert_rigid(Fa) @ Fb, T, atol=1e-9)
    assert 0 <= rec["offset"]["rotation_deg"] <= 20 and 0 <= rec["offset"]["translation_mm"] <= 10
    # nominally orthogonal: b's plane is a's turned by about 90 degrees (up to the 20-degree offset)
    turn = np.degrees(np.arccos(np.clip((np.trace(T[:3, :3]) - 1) / 2, -1, 1)))
    assert 60 <= turn <= 120


def test_joint_reconstruction_from_the_cli(pair_dir, tmp_path):
    p = pair_dir / "pair"
    out = tmp_path / "joint"
    res = _run("sweep", "reconstruct", p / "a.seq.nrrd", p / "b.seq.nrrd", out, "--poses", "fan", "--span", "120",
               "--truth-transform", p / "truth.json", "--truth", p / "truth.nii.gz", "--cross-view", *SMALL)
    assert res.exit_code == 0, res.output
    assert "b.seq.nrrd: registered" in res.output and "error" in res.output
    for name in ("gaussians.ply", "volume.nii.gz", "slices_a.png", "slices_b.png", "report.json"):
        assert (out / name).is_file(), name
    rep = json.loads((out / "report.json").read_text())
    reg = rep["registration"]
    assert [r["status"] for r in reg] == ["reference", "registered"]
    assert reg[1]["mode"] == "search" and len(reg[1]["transform"]) == 4
    assert reg[1]["error"]["rotation_deg"] < 6.0 and reg[1]["error"]["translation_mm"] < 4.0, reg[1]["error"]
    assert rep["warnings"] == [] and set(rep["volume"]) >= {"dice", "psnr"}
    assert [s["shape"] for s in rep["sweeps"]] == [[48, 48], [48, 48]]
    # the cross-view protocol: each sweep alone, scored on the other's held-out frames, both ways
    cross = rep["cross_view"]
    assert [(x["trained_on"], x["scored_on"]) for x in cross] == [("a.seq.nrrd", "b.seq.nrrd"),
                                                                  ("b.seq.nrrd", "a.seq.nrrd")]
    assert all(0 < x["single"]["ssim"] <= 1 and 0 < x["joint"]["ssim"] <= 1 and x["frames"] > 0 for x in cross)
    assert "cross-view a.seq.nrrd -> b.seq.nrrd" in res.output
    page = (out / "report.html").read_text(encoding="utf-8")  # its page shows the registration
    assert "search NCC" in page and "slices_b.png" in page and "SSIM, joint model" in page


def test_different_pixel_sizes_and_one_tracked_sweep(pair_dir, tmp_path):
    """a tracked (its file's poses), b sensorless (fan prior) at another frame size: both kept, b registered."""
    p = pair_dir / "pair"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"sweeps": {"b40": {"poses": "fan", "span": 120, "register": "search"}}}))
    out = tmp_path / "mixed"
    res = _run("sweep", "reconstruct", p / "a.seq.nrrd", p / "b40.seq.nrrd", out, "--plan", plan, *SMALL)
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["poses"] == ["tracked", "fan"]
    assert [s["shape"] for s in rep["sweeps"]] == [[48, 48], [40, 40]]
    assert rep["sweeps"][0]["spacing_mm"] != rep["sweeps"][1]["spacing_mm"]
    assert rep["registration"][1]["status"] == "registered"


def test_sweeps_that_do_not_overlap_are_reconstructed_alone_with_a_warning(pair_dir, tmp_path):
    p = pair_dir / "pair"
    out = tmp_path / "apart"
    res = _run("sweep", "reconstruct", p / "a.seq.nrrd", p / "blobs.seq.nrrd", out, *SMALL)
    assert res.exit_code == 0, res.output
    assert "warning: sweeps a.seq.nrrd and blobs.seq.nrrd do not overlap" in res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["registration"][1]["status"] == "failed"
    assert (out / "blobs" / "report.json").is_file() and (out / "blobs" / "volume.nii.gz").is_file()
    assert (out / "gaussians.ply").is_file()  # the first sweep's own result


def test_plan_file_is_parsed_by_name_stem_or_path(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"sweeps": {"a": {"span": 90, "fan_axis": "axial"},
                                           "dir/b.seq.nrrd": {"poses": "fan", "pivot_offset": 5, "spacing": 0.4,
                                                              "register": "none"}}}))
    entries = read_plan(plan, ["x/a.seq.nrrd", "dir/b.seq.nrrd", "c.igs.mha"])
    assert entries[0].options.span_deg == 90 and entries[0].options.fan_axis == "axial"
    assert entries[1].options.poses == "fan" and entries[1].options.pivot_offset_mm == 5
    assert entries[1].spacing_mm == 0.4 and entries[1].options.register == "none"
    assert entries[2].options.register == "auto" and entries[2].spacing_mm is None
    assert sweep_names(["x/a.seq.nrrd", "y/a.seq.nrrd", "b.mp4"]) == ["1_a", "2_a", "b"]


@pytest.mark.parametrize("content, match", [
    ({"sweeps": {"c.seq.nrrd": {}}}, "names sweep 'c.seq.nrrd', which is not among the sweeps given"),
    ({"sweeps": {"a": {"span": "wide"}}}, "span must be a number"),
    ({"sweeps": {"a": {"colour": 1}}}, "unknown option"),
    ({"sweeps": {"a": {"register": "maybe"}}}, "register must be one of"),
    ({"sweeps": {"a": {"poses": "gps"}}}, "poses must be one of"),
    ({"sweeps": {"a": {"spacing": -1}}}, "spacing must be positive"),
    ({"sweeps": {"a": {}, "a.seq.nrrd": {}}}, "twice"),
    ({"sweep": {}}, "must be"),
    ([1, 2], "must be"),
])
def test_a_wrong_plan_is_refused(tmp_path, content, match):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(content))
    with pytest.raises(InputError, match=match):
        read_plan(plan, ["a.seq.nrrd", "b.seq.nrrd"])


# The CLI's refusals (a plan naming a sweep not given, a missing plan or sweep, a wrong truth
# transform, --register with one sweep) are rows of the bad-input catalogue, tests/test_bad_inputs.py.


def test_truth_transforms_are_read_and_checked(tmp_path):
    f = tmp_path / "t.json"
    T = np.eye(4)
    T[:3, 3] = [1, 2, 3]
    f.write_text(json.dumps({"b_to_a": T.tolist()}))
    mats, frame = read_truth_transforms(f, 2)
    np.testing.assert_array_equal(mats[1], T)
    np.testing.assert_array_equal(mats[0], np.eye(4))
    assert frame is None
    f.write_text(json.dumps({"to_first": [np.eye(4).tolist(), (2 * np.eye(4)).tolist()]}))
    with pytest.raises(InputError, match="not a rigid"):
        read_truth_transforms(f, 2)
