"""Rigid transforms, rotation matrices, quaternions and Euler angles (NumPy, float64).

Conventions (``docs/conventions.md``): quaternions are ``(w, x, y, z)`` with ``w >= 0`` after
normalisation; rotation matrices act on column vectors (``p' = R @ p``); Euler angles follow the
heart paper, ``R = Rz(theta_z) @ Ry(theta_y) @ Rx(theta_x)`` (extrinsic x, then y, then z), in
radians unless a name ends in ``_deg``.
"""

from __future__ import annotations

import numpy as np

from sono3d.errors import InputError

__all__ = [
    "rot_x",
    "rot_y",
    "rot_z",
    "euler_to_matrix",
    "matrix_to_euler",
    "axis_angle_to_matrix",
    "quat_to_matrix",
    "matrix_to_quat",
    "quat_multiply",
    "quat_normalize",
    "rigid",
    "invert_rigid",
    "apply",
    "is_rotation",
    "split_scale",
]


def rot_x(angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about +x (right-handed)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about +y (right-handed)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about +z (right-handed)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def euler_to_matrix(theta_x: float, theta_y: float, theta_z: float) -> np.ndarray:
    """``R = Rz(theta_z) @ Ry(theta_y) @ Rx(theta_x)`` (radians), as in the S2MNet paper."""
    return rot_z(theta_z) @ rot_y(theta_y) @ rot_x(theta_x)


def matrix_to_euler(R: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`euler_to_matrix`: ``(theta_x, theta_y, theta_z)`` in radians.

    ``theta_y`` is returned in [-pi/2, pi/2]; at gimbal lock (``|theta_y| = pi/2``) ``theta_x`` is
    set to 0 and ``theta_z`` absorbs the remaining rotation.
    """
    R = np.asarray(R, dtype=np.float64)
    sy = -R[2, 0]
    sy = float(np.clip(sy, -1.0, 1.0))
    theta_y = float(np.arcsin(sy))
    if abs(sy) < 1.0 - 1e-10:
        theta_x = float(np.arctan2(R[2, 1], R[2, 2]))
        theta_z = float(np.arctan2(R[1, 0], R[0, 0]))
    else:
        theta_x = 0.0
        theta_z = float(np.arctan2(-R[0, 1], R[1, 1]))
    return theta_x, theta_y, theta_z


def axis_angle_to_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about the unit direction ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    n = np.linalg.norm(a)
    if not np.isfinite(n) or n == 0:
        raise InputError("rotation axis must be a non-zero finite vector")
    a = a / n
    K = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(angle) * K + (1.0 - np.cos(angle)) * (K @ K)


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternion(s) ``(..., 4)`` in ``(w, x, y, z)`` order with ``w >= 0``."""
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(n == 0) or not np.all(np.isfinite(n)):
        raise InputError("quaternion must be non-zero and finite")
    q = q / n
    return np.where(q[..., :1] < 0, -q, q)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` from quaternions ``(..., 4)`` ordered ``(w, x, y, z)``."""
    q = quat_normalize(q)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    R = np.empty(q.shape[:-1] + (3, 3))
    R[..., 0, 0] = 1 - 2 * (y * y + z * z)
    R[..., 0, 1] = 2 * (x * y - w * z)
    R[..., 0, 2] = 2 * (x * z + w * y)
    R[..., 1, 0] = 2 * (x * y + w * z)
    R[..., 1, 1] = 1 - 2 * (x * x + z * z)
    R[..., 1, 2] = 2 * (y * z - w * x)
    R[..., 2, 0] = 2 * (x * z - w * y)
    R[..., 2, 1] = 2 * (y * z + w * x)
    R[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return R


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Quaternions ``(..., 4)`` ``(w, x, y, z)``, ``w >= 0``, from rotation matrices ``(..., 3, 3)``.

    Uses the numerically stable branch on the largest of ``w, x, y, z`` (Shepperd's method).
    """
    R = np.asarray(R, dtype=np.float64)
    flat = R.reshape(-1, 3, 3)
    out = np.empty((flat.shape[0], 4))
    for n, m in enumerate(flat):
        tr = m[0, 0] + m[1, 1] + m[2, 2]
        cand = np.array([tr, m[0, 0], m[1, 1], m[2, 2]])
        k = int(np.argmax(cand))
        if k == 0:
            s = np.sqrt(1.0 + tr) * 2
            q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
        elif k == 1:
            s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
            q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
        elif k == 2:
            s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
            q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
        else:
            s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
            q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
        out[n] = q
    return quat_normalize(out).reshape(R.shape[:-2] + (4,))


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of ``(w, x, y, z)`` quaternions (rotate by b, then by a)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    w1, x1, y1, z1 = np.moveaxis(a, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        axis=-1,
    )


def rigid(R: np.ndarray | None = None, t: np.ndarray | None = None) -> np.ndarray:
    """4x4 homogeneous matrix from a 3x3 rotation (default identity) and translation in mm."""
    T = np.eye(4)
    if R is not None:
        T[:3, :3] = R
    if t is not None:
        T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid 4x4 matrices ``(..., 4, 4)`` using ``R^T`` (exact for rotations)."""
    T = np.asarray(T, dtype=np.float64)
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out


def apply(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 matrix to points ``(..., 3)`` (affine part only, no perspective)."""
    T = np.asarray(T, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return p @ T[:3, :3].T + T[:3, 3]


def is_rotation(R: np.ndarray, atol: float = 1e-4) -> bool:
    """True when ``R`` (3x3) is orthonormal with determinant +1 within ``atol``."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        return False
    return bool(np.allclose(R.T @ R, np.eye(3), atol=atol) and abs(np.linalg.det(R) - 1.0) < atol)


def split_scale(M: np.ndarray, atol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Split a 3x3 ``M = R @ diag(s)`` (rotation times per-axis scale) into ``(R, s)``.

    Raises :class:`~sono3d.errors.InputError` when the columns are not orthogonal (shear) or the
    matrix is a reflection, i.e. when ``M`` is not a rigid rotation with pixel spacing folded in.
    """
    M = np.asarray(M, dtype=np.float64)
    s = np.linalg.norm(M, axis=0)
    if np.any(s <= 0) or not np.all(np.isfinite(s)):
        raise InputError("transform has a zero-length or non-finite axis")
    R = M / s
    if not is_rotation(R, atol=atol):
        raise InputError("transform is not rigid (its axes are sheared or mirrored)")
    return R, s
