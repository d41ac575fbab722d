"""Training: a tiny scene is recovered, runs repeat exactly, density control keeps Adam consistent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sono3d.errors import InputError
from sono3d.sweep.density import DensityControl, DensityState, activity, control_step, replace_rows
from sono3d.sweep.evaluate import frame_metrics, holdout_split, volume_metrics
from sono3d.sweep.gaussians import Gaussians
from sono3d.sweep.initialise import default_gaussians, frame_mask, on_slice_means, paper_pixel_mm, sweep_bounds
from sono3d.sweep.poses import fan_prior_poses
from sono3d.sweep.reconstruct import PRESETS, ReconstructConfig, gaussian_visibility, reconstruct_sweep
from sono3d.sweep.render import grid_for_bounds, render_frames, sample_volume
from sono3d.types import Sector, Sweep, Volume

# Learning rates raised so that a 24-pixel scene converges in a few dozen steps.
FAST_LR = dict(lr_intensity=0.04, lr_opacity=0.05, lr_log_scales=0.03, lr_means_px=0.5)


def _truth_gaussians(n: int = 10) -> Gaussians:
    g = torch.Generator().manual_seed(3)
    means = torch.stack([torch.rand(n, generator=g) * 6 - 3, torch.rand(n, generator=g) * 4 - 2,
                         -3 - torch.rand(n, generator=g) * 6], 1)
    return Gaussians(means, math.log(1.2) + 0.3 * torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g),
                     torch.full((n,), 2.0), 0.4 + 0.4 * torch.rand(n, generator=g))


@pytest.fixture(scope="module")
def tiny_sweep() -> Sweep:
    """16 frames of 24x24 pixels (0.5 mm) fanned over 60 degrees through 10 Gaussians."""
    P = fan_prior_poses(16, (24, 24), (0.5, 0.5), 60.0)
    frames = render_frames(_truth_gaussians(), P, (24, 24), backend="reference")
    return Sweep(np.clip(frames, 0, 1), P, (0.5, 0.5))


def test_tiny_scene_is_recovered(tiny_sweep):
    cfg = ReconstructConfig.preset("small", gaussians_per_slice=20, epochs=10, batch=3, holdout=4, **FAST_LR)
    res = reconstruct_sweep(tiny_sweep, cfg, progress=False)
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < losses[0] / 10
    assert res.report["train"]["ssim"] > 0.9
    assert res.report["holdout"]["frames"] == 4 and res.report["train"]["frames"] == 12
    assert set(res.report["train"]) >= {"l1", "l2", "ssim", "psnr", "ncc"}
    assert res.rendered.shape == tiny_sweep.frames.shape
    assert len(res.gaussians) + res.report["unseen_pruned"] == 12 * 20
    assert res.rendered.min() >= 0 and res.rendered.max() <= 1


def test_same_seed_same_result_and_other_seed_differs(tiny_sweep):
    cfg = ReconstructConfig.preset("small", gaussians_per_slice=8, epochs=2, batch=4)
    a = reconstruct_sweep(tiny_sweep, cfg, progress=False)
    b = reconstruct_sweep(tiny_sweep, cfg, progress=False)
    c = reconstruct_sweep(tiny_sweep, ReconstructConfig.preset("small", gaussians_per_slice=8, epochs=2, batch=4,
                                                                    seed=1), progress=False)
    for name, t in a.gaussians.tensors().items():
        assert torch.equal(t, getattr(b.gaussians, name)), name
    assert a.history == [dict(h, seconds=x["seconds"]) for h, x in zip(b.history, a.history)]
    assert not torch.equal(a.gaussians.means, c.gaussians.means)


def test_density_control_with_pose_refinement_runs(tiny_sweep):
    dc = DensityControl(threshold=0.3, every=1, start=1, stop=3, grace=1)
    cfg = ReconstructConfig.preset("small", gaussians_per_slice=8, epochs=3, batch=4, density_control=True,
                                        density=dc, poses="fan", span_deg=60.0, refine_poses=True)
    res = reconstruct_sweep(tiny_sweep, cfg, progress=False)
    assert [d["epoch"] for d in res.report["density"]] == [1, 2]
    assert {h["gaussians"] for h in res.history} == {13 * 8}  # reinsertion keeps the count
    assert res.report["pose_refinement"]["max_rotation_deg"] > 0
    assert res.poses.shape == (16, 4, 4) and not np.allclose(res.poses, res.prior_poses)


def test_paper_preset_and_unit_conversion():
    p = PRESETS["paper"]
    assert (p.epochs, p.batch, p.gaussians_per_slice) == (60, 32, 120)
    assert (p.lr_means_px, p.lr_opacity, p.lr_log_scales, p.lr_intensity) == (0.20, 0.03, 0.01, 0.008)
    assert paper_pixel_mm((256, 256), (0.3, 0.3)) == pytest.approx(0.3)
    assert paper_pixel_mm((100, 200), (0.5, 0.4)) == pytest.approx(80 / 256)
    with pytest.raises(InputError, match="unknown preset"):
        ReconstructConfig.preset("huge")
    with pytest.raises(InputError, match="epochs"):
        ReconstructConfig.preset("small", epochs=0)


def test_on_slice_init_lies_on_slices_inside_the_sector():
    shape, sp = (40, 40), (0.5, 0.5)
    sector = Sector(apex_px=(19.5, -5.0), angle_deg=60.0, radius_mm=(2.5, 22.0))
    P = fan_prior_poses(5, shape, sp, 40.0)
    mask = frame_mask(shape, sp, sector)
    means = on_slice_means(P, mask, 30, np.random.default_rng(0))
    assert means.shape == (5 * 30, 3)
    for i, M in enumerate(P):
        pts = means[30 * i: 30 * (i + 1)]
        local = np.linalg.solve(M, np.c_[pts, np.ones(30)].T).T  # (col, row, 0, 1)
        assert np.allclose(local[:, 2], 0, atol=1e-9)
        cols, rows = np.rint(local[:, 0]).astype(int), np.rint(local[:, 1]).astype(int)
        assert mask[rows, cols].all()
    g = default_gaussians(means, 0.7)
    assert torch.allclose(torch.sigmoid(g.opacity_logits), torch.tensor(1 / (1 + math.exp(-1.0))))
    assert torch.allclose(g.log_scales.exp(), torch.tensor(0.7)) and torch.all(g.intensities == 0.5)
    lo, hi = sweep_bounds(P, mask)
    assert np.all(means >= lo - 1e-9) and np.all(means <= hi + 1e-9)


def test_replace_rows_slices_and_zeros_adam_state():
    p = {"a": torch.nn.Parameter(torch.arange(5.0)), "b": torch.nn.Parameter(torch.ones(5, 3))}
    opt = torch.optim.Adam(p.values(), lr=0.1)
    ((p["a"] ** 2).sum() + (p["b"] * torch.arange(5.0)[:, None]).sum()).backward()
    opt.step()
    old_avg = opt.state[p["a"]]["exp_avg"].clone()
    keep = torch.tensor([True, False, True, True, False])
    new = replace_rows(opt, p, keep, {"a": torch.tensor([7.0]), "b": torch.zeros(1, 3)})
    assert new["a"].shape == (4,) and new["b"].shape == (4, 3)
    assert opt.param_groups[0]["params"][0] is new["a"]
    st = opt.state[new["a"]]
    assert torch.equal(st["exp_avg"][:3], old_avg[keep]) and st["exp_avg"][3] == 0
    assert p["a"] not in opt.state
    # the optimiser keeps working on the new tensors
    (new["a"].sum() + new["b"].sum()).backward()
    opt.step()


def test_density_schedule_and_pruning():
    dc = DensityControl()
    assert [e for e in range(1, 61) if dc.due(e)] == [10, 20, 30, 40]
    g = default_gaussians(np.zeros((6, 3)) + np.arange(6)[:, None], 1.0)
    p = {k: torch.nn.Parameter(v) for k, v in g.tensors().items()}
    with torch.no_grad():
        p["intensities"][[1, 4]] = 0.01
    opt = torch.optim.Adam(p.values())
    st = DensityState.create(6)
    new = control_step(dc, st, p, opt, 10, lambda m: default_gaussians(m, 1.0).tensors(), torch.Generator())
    assert st.log == [{"epoch": 10, "pruned": 2, "gaussians": 6}]
    assert len(new["means"]) == 6 and activity(new["opacity_logits"], new["intensities"]).min() > 0.05
    assert torch.equal(st.spared, torch.tensor([0, 0, 0, 0, 1, 1]))
    assert control_step(dc, st, new, opt, 11, None, torch.Generator()) is new  # not due


def test_preset_is_the_constructor_and_old_names_still_work():
    import sono3d.sweep.init as old_init
    import sono3d.sweep.train as old_train

    cfg = ReconstructConfig.preset("fast", epochs=3, seed=None)
    assert cfg.preset_name == "fast" and cfg.epochs == 3 and cfg.seed == 0 and cfg.batch == 8
    assert ReconstructConfig.from_preset("fast", epochs=3) == cfg
    d = cfg.to_dict()  # report.json keeps its keys: the preset's name under "preset", first
    assert list(d)[0] == "preset" and d["preset"] == "fast" and "preset_name" not in d
    assert old_train.reconstruct_sweep is reconstruct_sweep and old_train.ReconstructConfig is ReconstructConfig
    assert old_init.frame_mask is frame_mask


def test_holdout_split_matches_the_baseline():
    from sono3d.sweep.compound import holdout_split as baseline

    for n, k in [(100, 5), (25, 5), (17, 3)]:
        a, b = holdout_split(n, k), baseline(n, k)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert holdout_split(10, 0)[1].size == 0
    with pytest.raises(InputError):
        holdout_split(10, 1)


def test_metrics_and_volume_sampling_are_exact():
    f = np.random.default_rng(0).random((3, 16, 16))
    m = frame_metrics(f, f)
    assert m["l1"] == 0 and m["ssim"] == pytest.approx(1) and m["ncc"] == pytest.approx(1)
    # a single isotropic Gaussian sampled on a grid equals its formula at the voxel centres
    g = default_gaussians(np.array([[1.0, -2.0, 0.5]]), 1.5, opacity_logit=0.0, intensity=0.8)
    affine, shape = grid_for_bounds(np.array([-3.0, -6.0, -3.0]), np.array([5.0, 2.0, 4.0]), 0.5)
    vol = sample_volume(g, affine, shape, cutoff=None)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    x = ijk @ affine[:3, :3].T + affine[:3, 3]
    expect = 0.5 * 0.8 * np.exp(-0.5 * np.sum((x - [1.0, -2.0, 0.5]) ** 2, -1) / 1.5**2)
    assert np.allclose(vol.array, expect, atol=1e-5)
    vm = volume_metrics(vol.array, expect)
    assert vm["dice"] == 1.0 and vm["ncc"] == pytest.approx(1, abs=1e-6)


@pytest.mark.parametrize("frames, match", [
    (np.ones((1, 16, 16), np.float32), "at least 2 frames"),
    (np.zeros((4, 16, 16), np.float32), "black"),
    (np.ones((4, 8, 8), np.float32), "too small"),
])
def test_bad_sweeps_are_refused(frames, match):
    sw = Sweep(frames, fan_prior_poses(len(frames), frames.shape[1:], (1.0, 1.0), 30.0), (1.0, 1.0))
    with pytest.raises(InputError, match=match):
        reconstruct_sweep(sw, PRESETS["small"], progress=False)


def test_volume_metrics_with_truth(tiny_sweep):
    truth_vol = sample_volume(_truth_gaussians(), *grid_for_bounds(np.array([-6.0, -4, -12]), np.array([6.0, 4, 0]), 0.5))
    cfg = ReconstructConfig.preset("small", gaussians_per_slice=8, epochs=1, batch=8)
    res = reconstruct_sweep(tiny_sweep, cfg, truth=Volume(truth_vol.array, truth_vol.affine), progress=False)
    v = res.report["volume"]
    assert set(v) >= {"psnr", "ncc", "dice", "threshold", "voxels"} and v["voxels"] > 0


def test_unseen_gaussians_are_dropped(tiny_sweep):
    P = torch.as_tensor(tiny_sweep.image_to_world[:4], dtype=torch.float32)
    g = default_gaussians(np.array([[0.0, 0.0, -5.0], [0.0, 500.0, -5.0]]), 1.0)
    vis = gaussian_visibility(g, P, (24, 24), None, "reference", 3.0)
    direct = render_frames(g.select(torch.tensor([True, False])), P, (24, 24), backend="reference").sum()
    assert vis[1] == 0 and float(vis[0]) == pytest.approx(float(direct) / 0.5, rel=1e-4)
