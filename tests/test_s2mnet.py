"""S2MNet and the voxel baseline: shapes, the occupancy rule, and LV volumes / EF of analytic shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sono3d.errors import InputError
from sono3d.geometry.mesh import triangles
from sono3d.heart.data import drop_views, echo_frame, from_frame, split_cases, to_frame
from sono3d.heart.occupancy import inside_parity, occupancy, surface_components, union_box
from sono3d.heart.predict import lv_volumes_from_points
from sono3d.heart.s2mnet import NetConfig, PixelImputer, S2MNet, VoxelNet, build_model, check_presence
from sono3d.heart.template import template_mesh_with


@pytest.fixture(scope="module")
def tiny() -> NetConfig:
    return NetConfig.preset("tiny")


def test_s2mnet_shapes_and_zero_start(tiny):
    torch.manual_seed(0)
    tpl = torch.randn(50, 3) * 30
    net = S2MNet(tiny, tpl, displacement_scale_mm=5.0).eval()
    x = torch.rand(2, 6, tiny.image_size, tiny.image_size)
    with torch.no_grad():
        d = net(x)
        f = net.field(x, size=8)
        pts = net.predict_points(x)
    assert d.shape == (2, 50, 3)
    assert f.shape == (2, 3, 8, 8, 8)
    # the last decoder layer starts at zero: an untrained network returns the template
    assert torch.count_nonzero(d) == 0
    assert torch.equal(pts[0], tpl)


def test_s2mnet_field_agrees_with_vertex_sampling(tiny):
    torch.manual_seed(1)
    tpl = torch.tensor([[-10.0, -20.0, -30.0], [10.0, 20.0, 30.0]])
    net = S2MNet(tiny, tpl, margin=0.0).eval()
    torch.nn.init.normal_(net.decoder[-1].weight, std=0.1)
    x = torch.rand(1, 6, tiny.image_size, tiny.image_size)
    with torch.no_grad():
        f = net.field(x, size=5)  # grid corners are the box corners: the template's two points
        d = net(x)
    assert torch.allclose(f[0, :, 0, 0, 0], d[0, 0], atol=1e-5)
    assert torch.allclose(f[0, :, -1, -1, -1], d[0, 1], atol=1e-5)


def test_voxelnet_shapes(tiny):
    net = build_model("voxel", tiny, box_centre=torch.zeros(3), box_half=torch.full((3,), 50.0)).eval()
    assert isinstance(net, VoxelNet)
    with torch.no_grad():
        y = net(torch.rand(3, 6, tiny.image_size, tiny.image_size))
    assert y.shape == (3, tiny.voxel_channels, tiny.voxel_size, tiny.voxel_size, tiny.voxel_size)


def test_bad_network_input(tiny):
    net = S2MNet(tiny, torch.zeros(4, 3))
    with pytest.raises(InputError, match=r"\[B, 6, H, W\]"):
        net(torch.rand(1, 5, 64, 64))
    with pytest.raises(InputError, match="unknown network preset"):
        NetConfig.preset("huge")
    with pytest.raises(InputError, match="unknown model"):
        build_model("nerf", tiny)


def _sphere(radius: float, res: int = 80):
    import pyvista as pv

    return pv.Sphere(radius=radius, theta_resolution=res, phi_resolution=res)


def test_inside_parity_matches_the_enclosed_volume():
    from sono3d.geometry.mesh import enclosed_volume_mm3

    s = _sphere(20.0)
    occ = inside_parity(np.asarray(s.points), triangles(s), np.full(3, -25.0), np.full(3, 25.0), 100)
    assert occ.shape == (100, 100, 100)
    assert occ.sum() * 0.5 ** 3 == pytest.approx(enclosed_volume_mm3(s), rel=5e-3)
    assert occ[50, 50, 50] and not occ[0, 0, 0]


def test_occupancy_is_the_union_of_components_and_fills_shells():
    # two nested spheres (a shell, like a chamber wall) plus a separate sphere
    outer, inner, other = _sphere(20.0, 40), _sphere(15.0, 40), _sphere(5.0, 30).translate((40, 0, 0))
    merged = outer.merge([inner, other], merge_points=False)
    P, F = np.asarray(merged.points), triangles(merged)
    comp = surface_components(F, len(P))
    assert len(np.unique(comp)) == 3
    lo, hi = union_box(P, pad_mm=2.0)
    heart, cav = occupancy(P, F, lo, hi, 64, comp)
    assert cav is None
    h = (hi - lo) / 64
    centre = np.floor((np.array([0.0, 0.0, 0.0]) - lo) / h).astype(int)
    assert heart[centre[2], centre[1], centre[0]]  # inside the inner sphere: occupied, not a hole
    vol = heart.sum() * np.prod(h)
    expect = 4 / 3 * np.pi * (20.0 ** 3 + 5.0 ** 3)
    assert vol == pytest.approx(expect, rel=0.03)


def _ellipsoid_template(res: int = 90):
    s = _sphere(1.0, res)
    f = triangles(s)
    return {"points": np.asarray(s.points, dtype=np.float64), "faces": f, "lv_cavity_faces": f,
            "cell_elemTag": np.ones(len(f), dtype=np.int64)}


def test_ef_of_analytic_ellipsoids_through_the_predict_volume_code():
    tpl = _ellipsoid_template()
    axes_ed = np.array([25.0, 22.0, 45.0])
    k = np.array([0.8, 0.78, 0.9])  # radial and longitudinal shortening
    ed = tpl["points"] * axes_ed
    es = tpl["points"] * axes_ed * k
    edv = lv_volumes_from_points(tpl, ed)
    esv = lv_volumes_from_points(tpl, es)
    analytic = 4 / 3 * np.pi * np.prod(axes_ed) / 1000.0
    assert edv == pytest.approx(analytic, rel=0.01)
    assert esv == pytest.approx(analytic * np.prod(k), rel=0.01)
    from sono3d.heart.clinical import ejection_fraction

    # both phases share the triangulation, so the EF is exact whatever the discretisation
    assert ejection_fraction(edv, esv) == pytest.approx((1 - np.prod(k)) * 100, abs=1e-6)


def test_open_cavity_is_refused():
    tpl = _ellipsoid_template(20)
    tpl["lv_cavity_faces"] = tpl["faces"][:-3]
    with pytest.raises(InputError, match="not watertight"):
        lv_volumes_from_points(tpl, tpl["points"] * 30)
    mesh = template_mesh_with(_ellipsoid_template(20), np.zeros((len(tpl["points"]), 3)))
    assert "elemTag" in mesh.cell_data and "lv_cavity_faces" in mesh.field_data


def test_echo_frame_round_trip_and_splits():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    M = np.eye(4)
    M[:3, :3] = q * 1.7  # image_to_world with 1.7 mm pixels
    M[:3, 3] = [10.0, -5.0, 3.0]
    T = echo_frame(M)
    assert np.allclose(T[:3, :3].T @ T[:3, :3], np.eye(3))
    p = rng.normal(size=(20, 3)) * 40
    assert np.allclose(from_frame(to_frame(p, T), T), p)
    ids = [f"{i:05d}" for i in range(50)]
    a, b = split_cases(ids, 7), split_cases(ids, 7)
    assert a == b and (len(a["train"]), len(a["val"]), len(a["test"])) == (40, 5, 5)
    assert not set(a["train"]) & set(a["test"]) and split_cases(ids, 8) != a


def test_encoder_stride_coordinates_and_affine_head(tiny):
    from dataclasses import replace

    from sono3d.heart.s2mnet import ViewEncoder

    x = torch.rand(3, 1, 64, 64)
    for stride, side in ((32, 2), (16, 4)):
        enc = ViewEncoder(replace(tiny, encoder_stride=stride, coord_channels=True))
        assert enc.layers(enc.stem(torch.cat([x, x, x], 1))).shape[-1] == side
    # the coordinate channels make a blank view's features depend on the position
    enc = ViewEncoder(replace(tiny, coord_channels=True)).eval()
    with torch.no_grad():
        f = enc(torch.zeros(1, 1, 64, 64))
    assert f.std() > 0
    # the affine head's translation moves every vertex by the same amount (in displacement-scale units)
    tpl = torch.randn(20, 3) * 10
    net = S2MNet(replace(tiny, global_affine=True, global_code=0), tpl, displacement_scale_mm=4.0).eval()
    net.affine[-1].bias.data[9:] = torch.tensor([1.0, -0.5, 0.25])
    with torch.no_grad():
        d = net(torch.rand(2, 6, 64, 64))
    assert torch.allclose(d, torch.tensor([4.0, -2.0, 1.0]).expand_as(d), atol=1e-5)


def test_global_branch_closed_form_fit(tiny):
    """Targets linear in the pooled pixels and of rank <= D: the closed-form start reproduces them."""
    from sono3d.heart.s2mnet import init_global_branch

    g = torch.Generator().manual_seed(0)
    N, V, D = 40, 30, tiny.global_code
    views = torch.rand(N, 6, 64, 64, generator=g)
    pooled = torch.nn.functional.adaptive_avg_pool2d(views, tiny.global_code_px).flatten(1)
    coef = pooled @ torch.randn(pooled.shape[1], 3, generator=g) * 0.05  # 3 shape modes
    modes = torch.randn(3, V * 3, generator=g)
    disp = (coef @ modes).reshape(N, V, 3)
    net = S2MNet(tiny, torch.randn(V, 3) * 20, displacement_scale_mm=2.0).eval()
    info = init_global_branch(net, views, disp, lam=1e-6)
    assert info["explained"] == pytest.approx(1.0)
    # Only the three real modes are kept (round-off directions would differ between thread counts),
    # each with its largest entry positive (a fixed sign).
    assert D > 3 and torch.count_nonzero(net.basis.weight[:, 3:]) == 0
    kept = net.basis.weight[:, :3]
    assert (kept.gather(0, kept.abs().argmax(0, keepdim=True)) > 0).all()
    with torch.no_grad():
        pred = net(views)
    assert torch.allclose(pred, disp, atol=1e-2 * float(disp.abs().max()))
    vox = build_model("voxel", tiny, box_centre=torch.zeros(3), box_half=torch.full((3,), 50.0))
    occ = (torch.rand(N, 2, 16, 16, 16, generator=g) > 0.5).float()
    init_global_branch(vox, views, occ)
    with torch.no_grad():
        assert vox(views[:2]).shape == (2, 2, 16, 16, 16)
    with pytest.raises(InputError, match="no global branch"):
        from dataclasses import replace

        init_global_branch(S2MNet(replace(tiny, global_code=0), torch.zeros(4, 3)), views, disp)


def test_pixel_imputer_recovers_missing_views_of_low_rank_data():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(5, 6, 16))  # 5 factors drive all six views (16 pixels each)
    train = np.einsum("nk,kvp->nvp", rng.normal(size=(200, 5)), basis) + 0.01 * rng.normal(size=(200, 6, 16))
    imp = PixelImputer(6, 16, rank=8)
    info = imp.fit(torch.from_numpy(train))
    assert info["rank"] == 8 and info["explained"] > 0.99
    x = torch.from_numpy(np.einsum("nk,kvp->nvp", rng.normal(size=(4, 5)), basis)).float()
    present = torch.tensor([[1, 1, 0, 0, 0, 0]] * 2 + [[0, 0, 0, 1, 1, 1]] * 2, dtype=torch.float32)
    out = imp(x * present[:, :, None], present)
    assert torch.equal(out[present > 0], (x * present[:, :, None])[present > 0])  # given views untouched
    err = (out - x).abs().max() / x.abs().max()
    assert err < 0.05, err  # two views determine the five factors, hence the other four views
    assert torch.equal(imp(x, torch.ones(4, 6)), x) and torch.equal(imp(x, None), x)


def test_pixel_imputer_mixed_patterns_match_per_sample_posterior_mean():
    """A batch mixing presence patterns (solved once per pattern) equals each sample's own posterior
    mean E[z | x_S] computed in float64 with numpy."""
    rng = np.random.default_rng(3)
    imp = PixelImputer(6, 9, rank=4)
    imp.fit(torch.from_numpy(rng.normal(size=(40, 6, 9))))
    x = torch.from_numpy(rng.normal(size=(7, 6, 9))).float()
    present = torch.from_numpy(rng.random((7, 6)) < 0.6).float()
    present[:, 0] = 1.0
    present[3] = present[1]  # a repeated pattern
    out = imp(x, present).double().numpy()
    L, mu, noise = imp.loadings.double().numpy(), imp.mean.double().numpy(), float(imp.noise)
    for b in range(7):
        s = present[b].numpy() > 0
        Ls = L[:, s].reshape(4, -1)
        A = Ls @ Ls.T / noise + np.eye(4)
        z = np.linalg.solve(A, Ls @ (x[b].double().numpy()[s] - mu[s]).ravel() / noise)
        want = np.where(s[:, None], x[b].double().numpy(), mu + np.einsum("k,kvp->vp", z, L))
        assert np.abs(out[b] - want).max() < 1e-4, b


def test_view_dropout_draws_and_presence_checks():
    rng = np.random.default_rng(1)
    draws = np.array([drop_views(rng, 6, 0.5) for _ in range(4000)])
    assert draws.any(1).all()  # never an empty subset
    full = draws.all(1).mean()
    assert 0.45 < full < 0.56  # half the samples keep all six (plus the 1/64 of the dropped ones that do)
    assert abs(draws[~draws.all(1)].mean() - 0.5) < 0.05
    assert np.array([drop_views(rng, 6, 0.0) for _ in range(50)]).all()  # no dropout: all present
    with pytest.raises(InputError, match="trained with all six views"):
        check_presence(torch.tensor([[1.0, 0, 1, 1, 1, 1]]), 1, 6, accepts=False)
    with pytest.raises(InputError, match="at least one view"):
        check_presence(torch.zeros(1, 6), 1, 6, accepts=True)
    assert check_presence(None, 1, 6, accepts=False) is None
