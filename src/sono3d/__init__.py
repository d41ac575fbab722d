"""sono3d: turn ordinary 2D ultrasound into 3D anatomy.

Two engines share one base:

* :mod:`sono3d.sweep` -- a freehand 2D sweep becomes a 3D volume by optimising anisotropic
  3D Gaussians rendered on the slice planes (tracked or sensorless poses), with classic
  compounding as the honest baseline.
* :mod:`sono3d.heart` -- six standard echo views become a four-chamber heart mesh (S2MNet),
  with LV volumes and ejection fraction.

Conventions (millimetres, RAS world, 4x4 image-to-world matrices, quaternions w, x, y, z) are
written once in ``docs/conventions.md``.
"""

__version__ = "0.1.0"

from sono3d.errors import SonoError  # noqa: E402

__all__ = ["SonoError", "__version__"]
