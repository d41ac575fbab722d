"""Readers and writers for sweeps, volumes and meshes (one registry keyed by extension).

See ``docs/io.md`` for the formats and how their coordinate frames map into sono3d's RAS world.
"""

from sono3d.io.api import describe, read_any, read_mesh, read_sweep, read_volume, write_mesh, write_sweep, write_volume
from sono3d.io.atomic import atomic_path, full_suffix
from sono3d.io.registry import known_suffixes
from sono3d.io.sequences import PlusConfig, read_plus_config

__all__ = [
    "atomic_path", "describe", "full_suffix", "known_suffixes", "PlusConfig", "read_any", "read_mesh", "read_plus_config",
    "read_sweep", "read_volume", "write_mesh", "write_sweep", "write_volume",
]
