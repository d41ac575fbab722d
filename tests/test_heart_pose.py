"""The view-plane regressor and the overlay: planes in the echo frame, slicing, a tiny training, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from sono3d.errors import InputError
from sono3d.heart.checkpoint import load_run
from sono3d.heart.cohort import generate_cohort, load_case
from sono3d.heart.data import echo_frame, to_frame
from sono3d.heart.overlay import OVERLAY_LABELS, label_dice, label_means, sector_masks, slice_views, template_layers
from sono3d.heart.pose import (PoseTrainConfig, normalised_targets, plane_errors, plane_matrix, planes_from_outputs,
                               predict_planes, train_pose, view_planes)
from sono3d.heart.template import template_record
from sono3d.phantoms.heart import VIEW_LABELS


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("pose") / "c"
    generate_cohort(out, 5, seed=7, size=64)
    return out


@pytest.fixture(scope="module")
def pose_run(cohort, tmp_path_factory):
    run = tmp_path_factory.mktemp("pose_run") / "r"
    res = train_pose(cohort, run, PoseTrainConfig.preset("tiny"), seed=1)
    assert res["epochs_done"] == 2 and res["kind"] == "pose"
    return run


def test_planes_in_the_echo_frame(cohort):
    v = load_case(cohort, "00001").views
    rot, apex = view_planes(v["poses"], 64)
    assert rot.shape == (2, 6, 3, 3) and apex.shape == (2, 6, 3)
    # A4C defines the frame: identity rotation, apex at the top centre pixel
    sp = float(v["spacing_mm"][0])
    assert np.allclose(rot[:, 0], np.eye(3), atol=1e-9)
    assert np.allclose(apex[:, 0], [31.5 * sp, 0, 0], atol=1e-9)
    # back to the world: the plane matrix in the echo frame, mapped by the frame, is the pose
    for p in range(2):
        E = echo_frame(v["poses"][p, 0])
        for j in range(6):
            M = plane_matrix(rot[p, j], apex[p, j], float(v["spacing_mm"][j]), 64)
            assert np.allclose(E @ M, v["poses"][p, j], atol=1e-6)


def test_true_mesh_on_true_plane_reproduces_the_label_images(cohort):
    """The overlay's painter, fed the truth, draws the cohort's own label images."""
    case = load_case(cohort, "00002")
    v = case.views
    rot, apex = view_planes(v["poses"], 64)
    layers = template_layers(template_record(case.ed, np.asarray(case.ed.points)))
    masks = sector_masks(v["opening_deg"], v["depth_mm"], v["spacing_mm"], 64)
    for p, mesh in enumerate((case.ed, case.es)):
        pts = to_frame(np.asarray(mesh.points, dtype=np.float64), echo_frame(v["poses"][p, 0]))
        labels, _ = slice_views(layers, pts, rot[p], apex[p], v["spacing_mm"], 64, masks)
        assert np.mean(labels == v["labels"][p]) > 0.999
        assert all(label_dice(labels[j], v["labels"][p, j]) > 0.99 for j in range(3))  # LV blood in the apical views
    # a plane moved by 10 mm along its normal cuts elsewhere
    moved = apex[0].copy()
    moved[1] += 10 * rot[0, 1][:, 2]
    pts = to_frame(np.asarray(case.ed.points, dtype=np.float64), echo_frame(v["poses"][0, 0]))
    labels, _ = slice_views(layers, pts, rot[0], moved, v["spacing_mm"], 64, masks)
    assert label_dice(labels[1], v["labels"][0, 1], VIEW_LABELS["lv_blood"]) < 0.95


def test_plane_errors_and_target_round_trip(pose_run):
    R = Rotation.from_euler("z", 7, degrees=True).as_matrix()
    ang, dist = plane_errors(R[None], np.array([[3.0, 4.0, 0.0]]), np.eye(3)[None], np.zeros((1, 3)))
    assert ang[0] == pytest.approx(7.0) and dist[0] == pytest.approx(5.0)
    model = load_run(pose_run).model
    rng = np.random.default_rng(0)
    kinds = np.arange(6)
    rot = np.stack([model.rotation_mean[k].double().numpy() @ Rotation.from_rotvec(rng.normal(0, 0.05, 3)).as_matrix()
                    for k in kinds])
    apex = rng.normal(0, 5, (6, 3))
    r2, a2 = planes_from_outputs(model, normalised_targets(model, rot, apex, kinds), kinds)
    assert np.allclose(r2, rot, atol=1e-6) and np.allclose(a2, apex, atol=1e-5)


def test_tiny_pose_training_learns_and_predicts(cohort, pose_run):
    run = load_run(pose_run, expect_kind="pose")
    assert run.kind == "pose" and run.template == {}
    v = load_case(cohort, "00000").views
    present = np.array([True, True, False, True, False, False])
    rot, apex = predict_planes(run, v["echo"], present)
    assert rot.shape == (2, 6, 3, 3) and np.isnan(rot[:, 2]).all() and np.isfinite(rot[:, present]).all()
    true_rot, true_apex = view_planes(v["poses"], 64)
    ang, dist = plane_errors(rot[:, present], apex[:, present], true_rot[:, present], true_apex[:, present])
    # the closed-form pixel term alone gets a training case's planes to a few degrees and mm
    assert np.median(ang) < 6 and np.median(dist) < 8
    with pytest.raises(InputError, match="'pose' run is needed"):
        predict_planes(load_run(pose_run).__class__(**{**load_run(pose_run).__dict__, "kind": "s2mnet"}), v["echo"])


def test_pose_training_resumes_exactly(cohort, tmp_path):
    cfg = PoseTrainConfig.preset("tiny", epochs=2, augment=True)
    a = train_pose(cohort, tmp_path / "a", cfg, seed=3)
    train_pose(cohort, tmp_path / "b", cfg, seed=3, stop_after_epoch=1)
    b = train_pose(cohort, tmp_path / "b", None, seed=3, resume=True)
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(InputError, match="already holds"):
        train_pose(cohort, tmp_path / "a", cfg)
    with pytest.raises(InputError, match="no checkpoint to resume"):
        train_pose(cohort, tmp_path / "c", cfg, resume=True)


def test_label_means_averages_the_image_inside_each_overlay_label():
    labels = np.zeros((4, 4), np.uint8)
    labels[:2] = OVERLAY_LABELS["lv_blood"]
    labels[2, :2] = OVERLAY_LABELS["lv_myocardium"]
    image = np.arange(16, dtype=np.float64).reshape(4, 4) / 16
    means = label_means(image, labels)
    assert means["lv_blood"] == pytest.approx(image[:2].mean()) and means["lv_myocardium"] == pytest.approx(8.5 / 16)
    assert np.isnan(label_means(image, np.zeros_like(labels))["lv_blood"])
    with pytest.raises(ValueError):
        label_means(image[:3], labels)
