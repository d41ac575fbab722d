"""Sample a volume on image planes (trilinear, in mm), optionally inside a sector mask.

A plane is a 4x4 ``image_to_world`` matrix (pixel ``(col, row, 0, 1)`` to RAS mm, see
``docs/conventions.md``); the volume's ``affine`` takes voxel ``(i, j, k, 1)`` to the same mm. The
composition ``inv(affine) @ image_to_world`` maps pixels straight to fractional voxel indices, which
:func:`scipy.ndimage.map_coordinates` interpolates.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sono3d.errors import InputError
from sono3d.types import Volume

__all__ = ["sample_plane", "sample_planes", "pixel_to_voxel"]

# Pixels per map_coordinates call: bounds the (3, n) float64 coordinate buffer to ~100 MB.
_CHUNK_PIXELS = 4_000_000


def pixel_to_voxel(volume: Volume, image_to_world: np.ndarray) -> np.ndarray:
    """Matrices ``[N, 4, 4]`` (or ``[4, 4]``) taking pixel ``(col, row, 0, 1)`` to voxel ``(i, j, k, 1)``."""
    M = np.asarray(image_to_world, dtype=np.float64)
    if M.shape[-2:] != (4, 4) or M.ndim not in (2, 3):
        raise InputError(f"plane poses must have shape [4, 4] or [N, 4, 4], got {M.shape}")
    if not np.all(np.isfinite(M)):
        raise InputError("plane poses contain NaN or infinite values")
    return np.linalg.inv(volume.affine) @ M


def sample_plane(volume: Volume, image_to_world: np.ndarray, shape: tuple[int, int], order: int = 1,
                 fill: float = 0.0, mask: np.ndarray | None = None) -> np.ndarray:
    """Volume values on one image plane.

    Parameters
    ----------
    volume : Volume
        The 3D image and its voxel-to-mm affine.
    image_to_world : ndarray, shape (4, 4)
        Pose of the plane: pixel ``(col, row, 0, 1)`` to world mm.
    shape : (H, W)
        Image size in pixels.
    order : int
        Interpolation order: 0 nearest, 1 trilinear (default), 3 cubic spline.
    fill : float
        Value of pixels outside the volume (and outside ``mask``).
    mask : ndarray of bool, shape (H, W), optional
        Only these pixels are sampled (e.g. a sector); the rest get ``fill``.

    Returns
    -------
    ndarray, shape (H, W), float32
    """
    M = np.asarray(image_to_world, dtype=np.float64)
    if M.shape != (4, 4):
        raise InputError(f"a plane pose must be a 4x4 matrix, got shape {M.shape}")
    return sample_planes(volume, M[None], shape, order=order, fill=fill, mask=mask)[0]


def sample_planes(volume: Volume, image_to_world: np.ndarray, shape: tuple[int, int], order: int = 1,
                  fill: float = 0.0, mask: np.ndarray | None = None) -> np.ndarray:
    """Volume values on a stack of image planes (one vectorised interpolation per chunk of frames).

    Parameters
    ----------
    volume : Volume
    image_to_world : ndarray, shape (N, 4, 4)
        One pose per frame.
    shape : (H, W)
        Frame size in pixels.
    order, fill, mask
        As in :func:`sample_plane`; ``mask`` is shared by all frames.

    Returns
    -------
    ndarray, shape (N, H, W), float32

    Notes
    -----
    Pixel coordinates within 1e-6 voxel of an integer are snapped to it, so a plane through voxel
    centres reproduces the array exactly despite round-off in ``inv(affine)``.
    """
    H, W = (int(v) for v in shape)
    if H < 1 or W < 1:
        raise InputError(f"frame shape must be positive, got {shape}")
    if order not in (0, 1, 2, 3, 4, 5):
        raise InputError(f"interpolation order must be 0..5, got {order}")
    A = pixel_to_voxel(volume, image_to_world)
    if A.ndim == 2:
        A = A[None]
    n = A.shape[0]
    if mask is None:
        rows, cols = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
        rows, cols = rows.ravel(), cols.ravel()
        flat_index = None
    else:
        m = np.asarray(mask, dtype=bool)
        if m.shape != (H, W):
            raise InputError(f"mask shape {m.shape} does not match the frame shape {(H, W)}")
        flat_index = np.flatnonzero(m)
        rows, cols = (v.astype(np.float64) for v in np.divmod(flat_index, W))

    data = np.asarray(volume.array)
    if data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float32)
    prefilter = order > 1
    if prefilter:
        # Filter once here rather than once per chunk inside map_coordinates.
        data = ndimage.spline_filter(data, order=order, output=np.float64)

    out = np.full((n, H * W), fill, dtype=np.float32)
    per_chunk = max(1, _CHUNK_PIXELS // max(1, rows.size))
    for start in range(0, n, per_chunk):
        a = A[start:start + per_chunk]
        # coords[d, f, p] = a[f, d, 0] * col[p] + a[f, d, 1] * row[p] + a[f, d, 3]
        coords = (a[:, :3, 0, None] * cols + a[:, :3, 1, None] * rows + a[:, :3, 3, None]).transpose(1, 0, 2)
        near = np.rint(coords)
        snap = np.abs(coords - near) < 1e-6
        coords[snap] = near[snap]
        vals = ndimage.map_coordinates(data, coords.reshape(3, -1), order=order, mode="constant",
                                       cval=fill, prefilter=False).reshape(a.shape[0], -1)
        if flat_index is None:
            out[start:start + a.shape[0]] = vals
        else:
            out[start:start + a.shape[0], flat_index] = vals
    return out.reshape(n, H, W)
