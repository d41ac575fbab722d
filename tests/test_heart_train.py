"""S2MNet training: a tiny overfit, exact resume, the split, the dataset, and bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from sono3d.errors import InputError
from sono3d.heart.cohort import generate_cohort
from sono3d.heart.data import Augment, HeartViewsDataset, load_cohort_arrays
from sono3d.heart.s2mnet import NetConfig, S2MNet
from sono3d.heart.training import TrainConfig, train


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "c"
    generate_cohort(out, 4, seed=3, size=64)
    return out


def test_dataset_targets_and_seeded_augmentation(cohort):
    arr = load_cohort_arrays(cohort, ["00000", "00001"], size=64)
    assert arr.source == "identity" and arr.echo.shape == (2, 2, 6, 64, 64)
    V = arr.points.shape[2]
    tpl = arr.points.reshape(-1, V, 3).mean(0)
    ds = HeartViewsDataset(arr, "s2mnet", tpl, augment=Augment(), seed=5)
    assert len(ds) == 4
    x, y, present = ds[3]
    assert present.all()  # no view dropout by default
    assert x.shape == (6, 64, 64) and y.shape == (V, 3)
    assert torch.allclose(y, torch.from_numpy(arr.points[1, 1] - tpl))
    x2, _, _ = ds[3]
    assert torch.equal(x, x2)  # same seed, epoch and index: same augmentation
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], x)
    # the echo frame is rigid: distances between vertices are those of the world mesh
    import pyvista as pv

    world = np.asarray(pv.read(str(cohort / "cases" / "00000" / "es.vtp")).points, dtype=np.float64)
    pts = arr.points[0, 1].astype(np.float64)
    assert np.allclose(np.linalg.norm(pts[1:] - pts[:-1], axis=1), np.linalg.norm(world[1:] - world[:-1], axis=1),
                       atol=1e-3)


def test_deformation_targets_match_the_identity_when_exact(cohort, tmp_path):
    import shutil

    import pyvista as pv

    c = tmp_path / "c"
    shutil.copytree(cohort, c)
    tpl = np.asarray(pv.read(str(c / "cases" / "00000" / "ed.vtp")).points, dtype=np.float64)
    for cid in ("00001", "00002"):
        d = {ph: np.asarray(pv.read(str(c / "cases" / cid / f"{ph}.vtp")).points, dtype=np.float64) - tpl
             for ph in ("ed", "es")}
        np.savez(c / "cases" / cid / "deformation.npz", **d, template_id=np.array("00000"))
    ids = ["00001", "00002"]
    a = load_cohort_arrays(c, ids, size=64, targets="auto")
    b = load_cohort_arrays(c, ids, size=64, targets="identity")
    assert a.source == "deformation" and b.source == "identity"
    assert np.allclose(a.points, b.points, atol=1e-3)
    np.savez(c / "cases" / "00002" / "deformation.npz", ed=np.zeros((3, 3)))
    with pytest.raises(Exception, match="needs arrays"):
        load_cohort_arrays(c, ids, size=64, targets="deformation")


def test_tiny_overfit_loss_falls_tenfold(cohort):
    arr = load_cohort_arrays(cohort, ["00000", "00001"], size=64)
    V = arr.points.shape[2]
    x = torch.from_numpy(arr.echo.reshape(4, 6, 64, 64))
    target = torch.from_numpy(arr.points.reshape(4, V, 3))
    # start from a template that is off by a few mm so that the first loss is a real error
    tpl = target.mean(0) + torch.tensor([3.0, -2.0, 2.0])
    torch.manual_seed(0)
    # without the global branch, whose closed-form start would leave nothing to learn
    net = S2MNet(replace(NetConfig.preset("tiny"), global_code=0), tpl, displacement_scale_mm=5.0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = torch.mean((net(x) - (target - tpl)) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert min(losses[-5:]) < losses[0] / 10, losses[::10]


def _small_cfg(**kw) -> TrainConfig:
    return replace(TrainConfig.preset("tiny"), epochs=2, max_cases=3, augment=True, batch_size=2, **kw)


def test_resumed_run_equals_uninterrupted(cohort, tmp_path):
    full = train(cohort, tmp_path / "a", "s2mnet", _small_cfg(), seed=11)
    part = train(cohort, tmp_path / "b", "s2mnet", _small_cfg(), seed=11, stop_after_epoch=1)
    assert part["epochs_done"] == 1
    rest = train(cohort, tmp_path / "b", "s2mnet", None, resume=True)
    assert rest["epochs_done"] == 2
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    split = json.loads((tmp_path / "a" / "split.json").read_text())
    assert split["seed"] == 11 and len(split["train"]) + len(split["val"]) + len(split["test"]) == 3


def test_training_bad_input(cohort, tmp_path):
    cfg = replace(_small_cfg(), epochs=1)
    train(cohort, tmp_path / "r", "s2mnet", cfg, seed=0)
    with pytest.raises(InputError, match="already holds a training run"):
        train(cohort, tmp_path / "r", "s2mnet", cfg)
    with pytest.raises(InputError, match="holds a 's2mnet' run"):
        train(cohort, tmp_path / "r", "voxel", cfg, resume=True)
    with pytest.raises(InputError, match="no checkpoint to resume"):
        train(cohort, tmp_path / "empty", "s2mnet", cfg, resume=True)
    with pytest.raises(InputError, match="unknown model"):
        train(cohort, tmp_path / "x", "nerf", cfg)
    with pytest.raises(InputError, match="epochs must be a positive"):
        TrainConfig(epochs=0)
    with pytest.raises(InputError, match="no cases"):
        train(tmp_path / "nothing", tmp_path / "y", "s2mnet", cfg)
