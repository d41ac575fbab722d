"""Machinery for real sweeps (issue 13): gain compensation, adaptive densification, fitted and blended models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sono3d.io import read_sweep, write_sweep
from sono3d.phantoms.uterus import build_uterus
from sono3d.simulate.slicing import sample_planes
from sono3d.simulate.sweeps import SweepConfig, simulate_sweep
from sono3d.sweep.budget import plan_config
from sono3d.sweep.evaluate import frame_metrics, holdout_split
from sono3d.sweep.export import reconstruct_to_folder, render_to_sweep
from sono3d.sweep.gaussians import ply_render_settings
from sono3d.sweep.initialise import frame_mask
from sono3d.sweep.poses import canonical_pose
from sono3d.sweep.seed import fit_intensities, layer_poses, render_batched, seed_gaussians
from sono3d.sweep.strategy import Densify, DensifyState, grow, prune
from sono3d.sweep.reconstruct import ReconstructConfig, reconstruct_sweep
from sono3d.types import Sweep, Volume

SHAPE, SPACING = (24, 24), (0.5, 0.5)


def _blobs() -> Volume:
    """A smooth volume under the canonical probe face: a few Gaussian blobs on a grey background."""
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    aff[:3, 3] = [-8, -6, -14]
    x, y, z = np.meshgrid(np.arange(33) * 0.5 - 8, np.arange(25) * 0.5 - 6, np.arange(33) * 0.5 - 14, indexing="ij")
    v = 0.3 + 0.5 * np.exp(-((x - 2) ** 2 + y**2 + (z + 6) ** 2) / 8) + 0.4 * np.exp(-((x + 3) ** 2 + (y - 1) ** 2 + (z + 9) ** 2) / 5)
    return Volume(v.astype(np.float32), aff)


def _linear_sweep(n: int, step_mm: float) -> np.ndarray:
    P = np.repeat(canonical_pose(SHAPE, SPACING)[None], n, axis=0)
    P[:, 1, 3] = (np.arange(n) - (n - 1) / 2) * step_mm  # along the normal (+y)
    return P


def test_gain_compensation_recovers_known_per_frame_gains():
    P = _linear_sweep(16, 0.2)
    frames = sample_planes(_blobs(), P, SHAPE)
    gains = np.exp(np.random.default_rng(0).uniform(-0.2, 0.2, 16))
    sweep = Sweep((frames * gains[:, None, None]).astype(np.float32), P, SPACING)
    # one layer of Gaussians per mm (frames 0.2 mm apart): too smooth along the sweep to follow the gains
    cfg = ReconstructConfig.preset("fast", init="frames", gaussians_per_slice=40, init_sigma_mm=(1.2, 1.5),
                                        layer_mm=1.0, min_scale_px=2.0, gain="frame", lr_gain=0.01, epochs=40, batch=4, holdout=0,
                                        backend="numba", prune_unseen=False, seed=0)
    res = reconstruct_sweep(sweep, cfg, progress=False)
    assert res.report["gain"]["mode"] == "frame"
    learned = res.report["gain"]["per_frame"]
    # the gauge: no quadratic trend of the log-gain along the sweep (indistinguishable from anatomy)
    t = np.arange(16) - 7.5
    V = np.stack([t**0, t, t**2], axis=1)
    log_g = np.log(gains)
    truth = np.exp(log_g - V @ np.linalg.lstsq(V, log_g, rcond=None)[0])
    np.testing.assert_allclose(learned, truth, rtol=0.02)


def test_densification_grows_where_the_residual_is():
    """Left half flat, right half a fine checkerboard: new Gaussians go to the right."""
    P = _linear_sweep(4, 0.25)
    cols = np.arange(SHAPE[1])
    img = np.where(cols[None, :] < 12, 0.5, 0.5 + 0.4 * ((cols[None, :] // 2 + np.arange(SHAPE[0])[:, None] // 2) % 2 - 0.5))
    frames = np.repeat(img[None], 4, axis=0).astype(np.float32)
    sweep = Sweep(frames, P, SPACING)
    dens = Densify(every=10, start=10, stop_fraction=0.9, grow_fraction=0.2, max_gaussians=400, split_mm=5.0)
    cfg = ReconstructConfig.preset("fast", init="frames", gaussians_per_slice=16, init_sigma_mm=(1.5, 1.0),
                                        densify=dens, epochs=40, batch=1, holdout=0, backend="numba",
                                        prune_unseen=False, seed=0)
    res = reconstruct_sweep(sweep, cfg, progress=False)
    log = res.report["densify"]
    assert sum(e["cloned"] + e["split"] for e in log) > 20
    # column of every Gaussian in the frames' common plane
    x = res.gaussians.means[:, 0].numpy() / SPACING[1] + (SHAPE[1] - 1) / 2
    assert (x >= 12).sum() > 2 * (x < 12).sum()


def test_densify_state_follows_pruning_and_growth():
    G = 6
    params = {"means": torch.nn.Parameter(torch.arange(G * 3, dtype=torch.float32).reshape(G, 3)),
              "log_scales": torch.nn.Parameter(torch.zeros(G, 3)),
              "quats": torch.nn.Parameter(torch.tensor([[1.0, 0, 0, 0]] * G)),
              "opacity_logits": torch.nn.Parameter(torch.zeros(G)),
              "intensities": torch.nn.Parameter(torch.tensor([0.5, 0.0, 0.5, 0.0, 0.5, 0.5]))}
    opt = torch.optim.Adam(list(params.values()), lr=0.01)
    sum(p.sum() for p in params.values()).backward()
    opt.step()
    state = DensifyState.create(G)
    state.accumulate(torch.arange(G * 3, dtype=torch.float32).reshape(G, 3))
    before = state.grad.clone()
    control = Densify(prune_activity=0.1, grow_fraction=0.5, max_gaussians=100, split_mm=10.0)
    params, k = prune(control, state, params, opt)
    assert k == 2 and params["means"].shape[0] == 4 == state.grad.shape[0] == state.count.shape[0]
    keep = torch.tensor([0, 2, 4, 5])
    assert torch.equal(state.grad, before[keep])
    assert opt.state[params["means"]]["exp_avg"].shape == (4, 3)
    total = float(params["intensities"].detach().sum())
    params, cloned, split = grow(control, state, params, opt, torch.Generator().manual_seed(0))
    assert cloned == 2 and split == 0 and params["means"].shape[0] == 6 == state.grad.shape[0]
    assert float(params["intensities"].detach().sum()) == pytest.approx(total)  # clones share the intensity
    assert torch.equal(state.grad[4:], torch.zeros(2, dtype=state.grad.dtype))


@pytest.mark.parametrize("blended", [False, True])
def test_sirt_fits_the_frames(blended):
    P = _linear_sweep(6, 0.5)
    frames = torch.as_tensor(sample_planes(_blobs(), P, SHAPE))
    model = seed_gaussians(P, np.ones(SHAPE, bool), 64, (1.0, 0.8), np.random.default_rng(0))
    Pt = torch.as_tensor(P, dtype=torch.float32)
    inten, rms = fit_intensities(model, Pt, frames, None, "numba", 3.0, iterations=8, blended=blended)
    assert rms[-1] < 0.5 * rms[0] and rms[-1] < 0.05
    model.intensities = inten
    if not blended:
        img = render_batched(model, inten, Pt, SHAPE, "numba", 3.0)
        assert float((img - frames).pow(2).mean().sqrt()) == pytest.approx(rms[-1], rel=1e-3)


def test_layers_are_uniform_along_the_sweep():
    P = _linear_sweep(5, 1.0)
    P[3:, 1, 3] += 2.0  # a gap of 3 mm between frames 2 and 3
    L = layer_poses(P, np.ones(SHAPE, bool), 0.5)
    y = L[:, 1, 3]
    assert len(L) == 13 and np.allclose(np.diff(y), 0.5)
    assert y[0] == pytest.approx(P[0, 1, 3]) and y[-1] == pytest.approx(P[-1, 1, 3])


@pytest.fixture(scope="module")
def uterus_small():
    return build_uterus(seed=1, mesh=False, spacing_mm=1.5)


@pytest.mark.parametrize("frames,regime", [(20, "sparse"), (80, "bridged")])
def test_auto_preset_reads_the_frame_spacing(uterus_small, frames, regime):
    """Wide gaps between training frames get the frame-seeded blended model, narrow ones ``fast`` as it is;
    what the user set stays."""
    sweep, _ = simulate_sweep(uterus_small, SweepConfig(frames=frames, size_px=32))
    train, _ = holdout_split(frames, 5)
    mask = frame_mask(sweep.shape, sweep.spacing_mm, sweep.sector)
    cfg, rec = plan_config(ReconstructConfig.preset("auto", epochs=7, blend=False), sweep, sweep.image_to_world,
                           train, mask)
    assert rec["regime"] == regime and not cfg.auto
    assert cfg.epochs == 7 and cfg.blend is False and set(rec["fixed"]) == {"blend", "epochs"}
    fast = ReconstructConfig.preset("fast")
    if regime == "bridged":
        assert rec["chosen"] == {}
        assert cfg.init == fast.init and cfg.batch == fast.batch and cfg.gaussians_per_slice == fast.gaussians_per_slice
    else:
        gap = rec["profile"]["spacing_mm"]
        assert cfg.init == "frames" and cfg.layer_mm is None and cfg.slice_thickness_mm == pytest.approx(gap)
        assert cfg.init_sigma_mm[1] == pytest.approx(gap) and cfg.min_scale_elev_mm == pytest.approx(gap)


def test_blended_thick_model_renders_as_trained(tmp_path):
    """gaussians.ply records blending and slice thickness; ``sweep render`` reproduces the training frames' fit."""
    P = _linear_sweep(6, 0.5)
    sweep = Sweep(sample_planes(_blobs(), P, SHAPE).astype(np.float32), P, SPACING)
    path = write_sweep(tmp_path / "s.seq.nrrd", sweep)
    cfg = ReconstructConfig.preset("small", init="frames", blend=True, slice_thickness_mm=1.5, gaussians_per_slice=30,
                                   epochs=2, holdout=0, backend="numba", seed=0)
    rep = reconstruct_to_folder(path, tmp_path / "r", cfg, progress=False)
    assert ply_render_settings(tmp_path / "r" / "gaussians.ply") == {
        "blended": True, "elevation_sigma_mm": pytest.approx(cfg.elevation_sigma_mm)}
    out = render_to_sweep(tmp_path / "r" / "gaussians.ply", path, tmp_path / "r.seq.nrrd", backend="numba")
    again = frame_metrics(read_sweep(out).frames, sweep.frames)
    assert again["l1"] == pytest.approx(rep["train"]["l1"], rel=1e-4)
