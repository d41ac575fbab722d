"""phantoms."""
from sono3d.phantoms.uterus import ECHOGENICITY, LABELS, Phantom, UterusParams, build_label_phantom, build_uterus  # noqa: E402,F401
from sono3d.phantoms.files import PHANTOM_FILES, load_phantom, save_phantom  # noqa: E402,F401
from sono3d.phantoms.heart import HeartShape, Placement, build_heart_phase, heart_mesh, heart_phases, lv_cavity_mesh  # noqa: E402,F401
