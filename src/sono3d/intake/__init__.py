"""Clinical echo intake: recorded echoes (images, loops, DICOM) to views in the network's geometry.

The steps, each usable alone:

* :func:`read_echo` -- frames with colour flags, pixel size and DICOM region (:mod:`.read`);
* :func:`find_sector` -- the imaging fan in pixels (:mod:`.sector`);
* :func:`resample_fan` -- the fan into a :class:`ViewGeometry` (:mod:`.resample`);
* :func:`cavity_areas`, :func:`choose_phases` -- ED and ES frames of a loop (:mod:`.phases`);
* :func:`intake_echo` -- all of it for one file (:mod:`.echo`).

See ``docs/echo_intake.md``. This package sits beside :mod:`sono3d.simulate` in the layer order and
knows nothing of hearts: callers pass the target geometry.
"""

from sono3d.intake.echo import DEFAULT_DEPTH_MM, EchoIntake, intake_echo, pixel_size
from sono3d.intake.phases import cavity_areas, choose_phases, otsu_threshold
from sono3d.intake.read import EchoFrames, read_echo, read_npz, source_kind
from sono3d.intake.resample import ViewGeometry, resample_fan
from sono3d.intake.sector import FanFit, content_map, find_sector

__all__ = [
    "DEFAULT_DEPTH_MM", "EchoFrames", "EchoIntake", "FanFit", "ViewGeometry", "cavity_areas", "choose_phases",
    "content_map", "find_sector", "intake_echo", "otsu_threshold", "pixel_size", "read_echo", "read_npz",
    "resample_fan", "source_kind",
]
