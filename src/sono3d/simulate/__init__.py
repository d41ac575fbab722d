"""simulate."""
from sono3d.simulate.slicing import pixel_to_voxel, sample_plane, sample_planes  # noqa: E402,F401
from sono3d.simulate.bmode import BModeParams, bmode, envelope, log_compress, pseudo_echo  # noqa: E402,F401
from sono3d.simulate.sweeps import (  # noqa: E402,F401
    SWEEP_PRESETS, ProbePlacement, SweepConfig, frame_geometry, probe_base_pose, probe_placement, simulate_sweep,
    sweep_poses,
)
from sono3d.simulate.echo_views import VIEW_NAMES, EchoView, ViewOptions, plan_views, simulate_views  # noqa: E402,F401
