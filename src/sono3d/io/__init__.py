"""Readers and writers for sweeps, volumes and meshes (one registry keyed by extension)."""

from sono3d.io.atomic import atomic_path, full_suffix

__all__ = ["atomic_path", "full_suffix"]
