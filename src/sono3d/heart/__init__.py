"""Heart engine: six standard echo views become a four-chamber heart mesh (S2MNet), with LV volumes and EF.

The names a user calls, from data to numbers::

    from sono3d import heart

    heart.generate_cohort("out/cohort", n=200, size=64)          # synthetic cases with ground truth
    heart.correspond_cohort("out/cohort")                        # deformation labels (robust OT)
    heart.train("out/cohort", "out/run", config=heart.TrainConfig.preset("small"))
    report = heart.predict_files("out/run", "views.npz", "out/pred")   # meshes, EDV, ESV, EF, input check
    heart.evaluate_run("out/run", "out/cohort", "out/eval")      # IoU, distances, EF agreement

* cohort: :func:`generate_cohort`, :func:`load_case`, :func:`case_ids`, :func:`read_manifest`,
  :func:`read_cohort`, :func:`read_ghdheart`, :class:`HeartCase`;
* correspondences: :class:`Template`, :func:`load_template`, :class:`CorrespondOptions`,
  :func:`correspond_points`, :func:`correspond_meshes`, :func:`deformation_quality`,
  :func:`correspond_case`, :func:`correspond_cohort`;
* networks: :class:`NetConfig`, :func:`build_model`, :class:`TrainConfig`, :func:`train`,
  :func:`load_run`, :func:`predict_views`, :func:`predict_files`, :func:`predict_arrays`, :func:`predict_folder`,
  :func:`evaluate_split`, :func:`evaluate_run`; the view-plane regressor: :class:`PoseTrainConfig`,
  :func:`train_pose`, :func:`predict_planes`; the input check: :func:`check_views`;
* recorded echoes: :func:`intake_views` (files to the network's views);
* clinical numbers: :func:`lv_volume_ml`, :func:`ejection_fraction`, :func:`agreement`,
  :func:`correlate`, :func:`correlate_table`; strain and the AHA segments: :func:`lv_strain`,
  :class:`LVStrain`, :func:`aha_segments`;
* real beats: :func:`read_real_beat`, :func:`fit_real_beat` (the template fitted to every phase).

Modules, from the bottom up: ``spline``, ``surfaces`` (labelled surfaces as points), ``ot``
(robust optimal transport), ``segments`` (AHA 17 segments), ``strain`` (GLS, GCS, per segment),
``clinical``, ``cohort`` (the cohort on disk), ``template``, ``registration`` (one
template-to-target deformation), ``fit_real`` (the template on a real beat), ``correspond`` (a
whole cohort), ``data``
(training samples), ``occupancy`` (voxelised surfaces), ``s2mnet`` (the networks), ``checkpoint``
(the run's file), ``training``, ``input_check`` (is an input like the training views), ``pose``
(the view-plane regressor), ``overlay`` (the mesh on the views' planes), ``predict``, ``evaluate``,
``views_intake`` (recordings to views). Figures are drawn by :mod:`sono3d.viz.heart`,
:mod:`sono3d.viz.clinical`, :mod:`sono3d.viz.overlay` and :mod:`sono3d.viz.echo_intake`.

The names above are loaded on first use (PEP 562 module ``__getattr__``): ``import sono3d.heart``
and the spawned workers of a cohort (which import :mod:`sono3d.heart.cohort`) do not pay for torch,
which the networks and the correspondences need.
"""

from __future__ import annotations

import importlib
from typing import Any

# module (under sono3d.heart) -> the public names it gives this package
_FACE: dict[str, tuple[str, ...]] = {
    "cohort": ("HeartCase", "generate_cohort", "load_case", "case_ids", "read_manifest", "read_cohort",
               "read_ghdheart"),
    "template": ("Template", "load_template"),
    "registration": ("CorrespondOptions", "correspond_points", "correspond_meshes", "deformation_quality"),
    "correspond": ("correspond_case", "correspond_cohort"),
    "s2mnet": ("NetConfig", "build_model"),
    "training": ("TrainConfig", "train"),
    "checkpoint": ("load_run",),
    "predict": ("predict_views", "predict_files", "predict_arrays", "predict_folder"),
    "pose": ("PoseTrainConfig", "train_pose", "predict_planes"),
    "input_check": ("check_views",),
    "views_intake": ("intake_views",),
    "evaluate": ("evaluate_split", "evaluate_run"),
    "clinical": ("lv_volume_ml", "ejection_fraction", "agreement", "correlate", "correlate_table"),
    "segments": ("aha_segments",),
    "strain": ("LVStrain", "lv_strain"),
    "fit_real": ("read_real_beat", "fit_real_beat"),
}
_WHERE = {name: module for module, names in _FACE.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once loaded, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
