"""Geometry: rigid transforms, quaternions, Euler angles, image planes, sectors and fan sweeps.

Pure NumPy, no I/O. Conventions are in ``docs/conventions.md``.
"""

from sono3d.geometry.fan import fan_sweep, fan_sweep_in_image, rotate_about, translation_sweep, uniform_angles
from sono3d.geometry.planes import (
    image_to_world_matrix,
    pixel_grid_world,
    pixel_to_world,
    plane_normal,
    plane_rigid,
    require_affine_poses,
    validate_image_to_world,
    world_to_pixel,
)
from sono3d.geometry.sector import polar_coordinates, sector_for_probe, sector_mask, sector_to_cartesian
from sono3d.geometry.transforms import (
    apply,
    axis_angle_to_matrix,
    euler_to_matrix,
    invert_rigid,
    is_rotation,
    matrix_to_euler,
    matrix_to_quat,
    quat_multiply,
    quat_normalize,
    quat_to_matrix,
    rigid,
    rot_x,
    rot_y,
    rot_z,
    split_scale,
)

__all__ = [
    "apply", "axis_angle_to_matrix", "euler_to_matrix", "fan_sweep", "fan_sweep_in_image",
    "image_to_world_matrix", "invert_rigid", "is_rotation", "matrix_to_euler", "matrix_to_quat",
    "pixel_grid_world", "pixel_to_world", "plane_normal", "plane_rigid", "polar_coordinates",
    "quat_multiply", "quat_normalize", "quat_to_matrix", "require_affine_poses", "rigid", "rot_x", "rot_y", "rot_z",
    "rotate_about", "sector_for_probe", "sector_mask", "sector_to_cartesian", "split_scale",
    "translation_sweep", "uniform_angles", "validate_image_to_world", "world_to_pixel",
]
