"""Image planes: pixels to world millimetres through a 4x4 image-to-world matrix, and back.

A frame's ``image_to_world`` matrix ``M`` maps the pixel homogeneous vector ``(col, row, 0, 1)``
to RAS mm. Its first column is the world step of one column (lateral, length ``dx``), its second
the step of one row (axial, length ``dy``), its third the plane normal (unit length), and its
fourth the world position of pixel (0, 0).
"""

from __future__ import annotations

import numpy as np

from sono3d.errors import InputError
from sono3d.geometry.transforms import invert_rigid, split_scale

__all__ = [
    "canonical_pose",
    "image_to_world_matrix",
    "pixel_to_world",
    "world_to_pixel",
    "plane_rigid",
    "plane_normal",
    "pixel_grid_world",
    "validate_image_to_world",
    "require_affine_poses",
]


def image_to_world_matrix(
    rotation: np.ndarray, origin_mm: np.ndarray, spacing_mm: tuple[float, float]
) -> np.ndarray:
    """Build ``M`` from the image axes' rotation, the world position of pixel (0, 0) and spacing.

    Parameters
    ----------
    rotation : ndarray, shape (3, 3)
        Columns: world directions of +col (lateral), +row (axial) and the plane normal.
    origin_mm : ndarray, shape (3,)
        World position of the centre of pixel ``(row 0, col 0)`` in mm.
    spacing_mm : (float, float)
        ``(dy, dx)`` pixel spacing in mm.
    """
    dy, dx = spacing_mm
    M = np.eye(4)
    M[:3, :3] = np.asarray(rotation, dtype=np.float64) @ np.diag([dx, dy, 1.0])
    M[:3, 3] = np.asarray(origin_mm, dtype=np.float64)
    return M


def canonical_pose(shape: tuple[int, int], spacing_mm: tuple[float, float]) -> np.ndarray:
    """``image_to_world`` of a frame whose probe face (top-centre pixel) sits at the world origin.

    Columns run along +x (Right), rows along -z (Inferior, the beam points down), so the plane
    normal ``col x row`` is +y: the image is a coronal plane below the origin. The sensorless fan
    prior puts a sweep's middle frame here, and simulated sweeps "in their own frame" do the same.
    """
    H, W = shape
    dy, dx = spacing_mm
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    origin = np.array([-(W - 1) / 2.0 * dx, 0.0, 0.0])
    return image_to_world_matrix(rotation, origin, (dy, dx))


def plane_rigid(image_to_world: np.ndarray) -> np.ndarray:
    """The rigid part of ``M`` (pixel spacing divided out): image-mm to world-mm, ``(..., 4, 4)``."""
    M = np.asarray(image_to_world, dtype=np.float64)
    out = M.copy()
    s = np.linalg.norm(M[..., :3, :3], axis=-2)  # column norms
    out[..., :3, :3] = M[..., :3, :3] / s[..., None, :]
    return out


def plane_normal(image_to_world: np.ndarray) -> np.ndarray:
    """Unit normal(s) ``(..., 3)`` of the image plane(s): the direction col x row."""
    M = np.asarray(image_to_world, dtype=np.float64)
    n = np.cross(M[..., :3, 0], M[..., :3, 1])
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def pixel_to_world(image_to_world: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """World mm ``(..., 3)`` of pixel positions (fractional allowed) on one plane.

    Parameters
    ----------
    image_to_world : ndarray, shape (4, 4)
    rows, cols : array_like, broadcastable
        Pixel row (axial) and column (lateral) indices.
    """
    M = np.asarray(image_to_world, dtype=np.float64)
    r = np.asarray(rows, dtype=np.float64)
    c = np.asarray(cols, dtype=np.float64)
    r, c = np.broadcast_arrays(r, c)
    return c[..., None] * M[:3, 0] + r[..., None] * M[:3, 1] + M[:3, 3]


def world_to_pixel(
    image_to_world: np.ndarray, points_mm: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project world points onto one plane.

    Returns
    -------
    rows, cols : ndarray, shape (...)
        Fractional pixel coordinates of the orthogonal projection.
    distance_mm : ndarray, shape (...)
        Signed distance from the plane along its normal (col x row), in mm.
    """
    M = np.asarray(image_to_world, dtype=np.float64)
    _, s = split_scale(M[:3, :3])
    inv = invert_rigid(plane_rigid(M))
    p = np.asarray(points_mm, dtype=np.float64)
    local = p @ inv[:3, :3].T + inv[:3, 3]
    return local[..., 1] / s[1], local[..., 0] / s[0], local[..., 2]


def pixel_grid_world(image_to_world: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """World mm of every pixel centre of an ``(H, W)`` image: array ``(H, W, 3)``."""
    H, W = shape
    rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    return pixel_to_world(image_to_world, rows, cols)


def require_affine_poses(poses: np.ndarray, allow_single: bool = False) -> np.ndarray:
    """``poses`` as a float64 ``[N, 4, 4]`` stack of finite affine matrices, else :class:`InputError`.

    The shared first gate of every pose check: shape, NaN/inf, bottom row ``(0, 0, 0, 1)``. With
    ``allow_single`` one ``(4, 4)`` matrix is accepted and returned as ``[1, 4, 4]``.
    """
    M = np.asarray(poses, dtype=np.float64)
    original = M.shape
    if allow_single and M.ndim == 2:
        M = M[None]
    if M.ndim != 3 or M.shape[1:] != (4, 4):
        raise InputError(f"poses must have shape [N, 4, 4], got {original}")
    if not np.all(np.isfinite(M)):
        raise InputError("poses contain NaN or infinite values")
    if not np.allclose(M[:, 3], [0, 0, 0, 1], atol=1e-6):
        raise InputError("poses are not affine: their bottom row is not (0, 0, 0, 1)")
    return M


def validate_image_to_world(image_to_world: np.ndarray, spacing_mm: tuple[float, float] | None = None,
                            rtol: float = 1e-3) -> None:
    """Raise :class:`InputError` unless every ``M`` is a rotation times pixel spacing.

    Checks finiteness, orthogonal axes without mirroring, a bottom row ``(0, 0, 0, 1)``, a unit
    normal column, and (when given) column lengths matching ``(dy, dx)``.
    """
    M = require_affine_poses(image_to_world, allow_single=True)
    for n, m in enumerate(M):
        try:
            _, s = split_scale(m[:3, :3], atol=1e-3)
        except InputError as exc:
            raise InputError(f"pose of frame {n} is not rigid: {exc}") from None
        if abs(s[2] - 1.0) > 1e-3:
            raise InputError(f"pose of frame {n} is not rigid: its normal axis has length {s[2]:.4g}, not 1")
        if spacing_mm is not None:
            dy, dx = spacing_mm
            if not (np.isclose(s[0], dx, rtol=rtol) and np.isclose(s[1], dy, rtol=rtol)):
                raise InputError(
                    f"pose of frame {n} scales pixels by ({s[1]:.4g}, {s[0]:.4g}) mm, "
                    f"not the spacing ({dy:.4g}, {dx:.4g}) mm"
                )
