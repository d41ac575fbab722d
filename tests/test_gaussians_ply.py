"""Gaussians .ply files: round trip, header, and clear errors for files that are not Gaussians."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sono3d.errors import FileFormatError
from sono3d.sweep.gaussians import PLY_FIELDS, Gaussians, load_ply, save_ply


def _random_gaussians(n: int = 37, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=g) * 50,
        log_scales=torch.randn(n, 3, generator=g),
        quats=torch.randn(n, 4, generator=g),
        opacity_logits=torch.randn(n, generator=g),
        intensities=torch.randn(n, generator=g),
    )


def test_round_trip_is_exact_for_float32(tmp_path):
    g = _random_gaussians()
    path = save_ply(tmp_path / "g.ply", g, comments=("made by a test",))
    back = load_ply(path)
    for name, t in g.tensors().items():
        assert torch.equal(getattr(back, name), t), name


def test_header_names_fields_and_conventions(tmp_path):
    path = save_ply(tmp_path / "g.ply", _random_gaussians(5))
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header")].decode()
    assert header.startswith("ply\nformat binary_little_endian 1.0\n")
    props = [line.split()[-1] for line in header.splitlines() if line.startswith("property")]
    assert tuple(props) == PLY_FIELDS
    assert "mm" in header and "logit" in header and "(w, x, y, z)" in header
    assert "element vertex 5" in header
    # 12 float32 per vertex after the header line
    assert len(raw) - (raw.index(b"end_header") + len(b"end_header\n")) == 5 * 12 * 4


def test_empty_model_round_trips(tmp_path):
    g = _random_gaussians(0)
    assert len(load_ply(save_ply(tmp_path / "e.ply", g))) == 0


def test_ascii_ply_with_extra_fields_reads(tmp_path):
    names = ["nx", *PLY_FIELDS]
    rows = [[9.0, 1, 2, 3, -1, -1, -1, 1, 0, 0, 0, 1.0, 0.5], [9.0, 4, 5, 6, 0, 0, 0, 0, 1, 0, 0, -1.0, -0.2]]
    text = "ply\nformat ascii 1.0\nelement vertex 2\n" + "".join(f"property double {n}\n" for n in names)
    text += "end_header\n" + "\n".join(" ".join(str(v) for v in r) for r in rows) + "\n"
    p = tmp_path / "a.ply"
    p.write_text(text)
    g = load_ply(p)
    assert torch.allclose(g.means, torch.tensor([[1.0, 2, 3], [4, 5, 6]]))
    assert torch.allclose(g.intensities, torch.tensor([0.5, -0.2]))


def test_missing_fields_is_one_line_error(tmp_path):
    text = "ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
    text += "property float z\nend_header\n"
    p = tmp_path / "points.ply"
    p.write_bytes(text.encode() + np.zeros(3, "<f4").tobytes())
    with pytest.raises(FileFormatError) as err:
        load_ply(p)
    msg = str(err.value)
    assert "\n" not in msg and "missing" in msg and "scale_0" in msg and "intensity" in msg


@pytest.mark.parametrize("content", [b"not a ply at all", b"ply\nformat binary_little_endian 1.0\n"])
def test_not_a_ply(tmp_path, content):
    p = tmp_path / "bad.ply"
    p.write_bytes(content)
    with pytest.raises(FileFormatError):
        load_ply(p)


def test_truncated_ply(tmp_path):
    path = save_ply(tmp_path / "g.ply", _random_gaussians(10))
    cut = tmp_path / "cut.ply"
    cut.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(FileFormatError, match="truncated"):
        load_ply(cut)
