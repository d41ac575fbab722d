"""The run checkpoint of S2MNet and the voxel baseline: its format, writing, reading, the model it holds.

``RUN_DIR/checkpoint.pt`` (:data:`CHECKPOINT`) is written after every epoch, atomically, by
:func:`sono3d.heart.training.train`, and read back to resume training, to predict
(:mod:`sono3d.heart.predict`) and to evaluate (:mod:`sono3d.heart.evaluate`). It is a dict of
tensors and plain values only, so ``torch.load(weights_only=True)`` reads it:

=========== ==================================================================================
key         value
=========== ==================================================================================
format      :data:`CHECKPOINT_FORMAT`
kind        ``"s2mnet"``, ``"voxel"`` or ``"pose"`` (the view-plane regressor, :mod:`sono3d.heart.pose`)
epoch       epochs done (1-based count)
seed        the run's seed
net         :class:`~sono3d.heart.s2mnet.NetConfig` as a dict
train       :class:`~sono3d.heart.training.TrainConfig` (or the pose model's
            :class:`~sono3d.heart.pose.PoseTrainConfig`) as a dict
extra       ``displacement_scale_mm``, ``targets`` (``deformation`` / ``identity``), the voxel
            baseline's ``box_centre`` and ``box_half`` (mm), ``global_init_explained``,
            ``imputation`` (view-dropout runs: the PPCA's rank, noise and explained variance)
template    the template's record (:mod:`sono3d.heart.template`); ``{}`` for a pose model
model       the model's ``state_dict``
optimizer   AdamW's ``state_dict``
scheduler   the learning-rate schedule's ``state_dict``
rng         ``{"torch": torch.get_rng_state()}``
history     one dict per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``lr``, ``seconds``
input_check optional (S2MNet runs since issue 14): the training views' feature statistics of the
            input check (:mod:`sono3d.heart.input_check`), written after the last epoch
=========== ==================================================================================
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sono3d.errors import FileFormatError, InputError, reason
from sono3d.heart.s2mnet import POSE_KIND, NetConfig, build_model
from sono3d.heart.template import record_arrays
from sono3d.io.atomic import atomic_path
from sono3d.io.registry import file_signature

__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "save_checkpoint",
    "read_checkpoint",
    "net_config",
    "build_run_model",
    "LoadedRun",
    "load_run",
]

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "sono3d-s2mnet-run-1"


def save_checkpoint(path: str | os.PathLike[str], *, kind: str, epoch: int, seed: int, net: NetConfig,
                    train: dict[str, Any], extra: dict[str, Any], template: dict[str, Any], model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any, history: list[dict[str, Any]],
                    input_check: dict[str, Any] | None = None) -> None:
    """Write a checkpoint (see the module notes) atomically; the torch RNG state is taken now."""
    state = {
        "format": CHECKPOINT_FORMAT, "kind": kind, "epoch": int(epoch), "seed": int(seed),
        "net": net.to_dict(), "train": train, "extra": extra, "template": template,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state()}, "history": history,
    }
    if input_check is not None:
        state["input_check"] = input_check
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's dict, read with ``weights_only=True`` on the CPU.

    Raises :class:`FileFormatError` for a file torch cannot read and :class:`InputError` for one
    that is not an S2MNet-run checkpoint.
    """
    expected = f"expected the {CHECKPOINT} that sono3d heart train writes, a PyTorch zip archive"
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != b"PK\x03\x04":
        # Not a zip: an old-style pickle, or not a checkpoint at all. Refused before torch reads it.
        found = file_signature(path)
        raise FileFormatError(f"{path}: not a sono3d checkpoint ({expected}; {'it is ' + found if found else 'it is not a zip archive'})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise FileFormatError(f"{path}: not a sono3d checkpoint: it holds Python objects beyond tensors and plain "
                              f"values, which sono3d never loads ({_unpickler_detail(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - zip/stream errors of a truncated or corrupt file
        raise FileFormatError(f"{path}: checkpoint is truncated or corrupt ({reason(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a sono3d S2MNet/voxel checkpoint (a PyTorch file of another program; "
                         f"its format is {state.get('format') if isinstance(state, dict) else type(state).__name__!r})")
    return state


def _unpickler_detail(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused, without its advice to load the file unsafely."""
    text = " ".join(str(exc).split())
    m = re.search(r"(Trying to load unsupported .*?\.|WeightsUnpickler error: .*?\.)(?= |$)", text)
    return m.group(1).strip() if m else reason(exc)


def net_config(state: dict[str, Any], path: str | os.PathLike[str]) -> NetConfig:
    """The checkpoint's network config; :class:`InputError` for fields this version does not know."""
    try:
        return NetConfig(**state["net"])
    except TypeError as exc:  # a checkpoint of a newer network
        raise InputError(f"{path}: a network this version of sono3d cannot build ({exc})") from None


def build_run_model(kind: str, net: NetConfig, template_points: Any, extra: dict[str, Any]) -> torch.nn.Module:
    """The untrained model of a run: S2MNet over ``template_points [V, 3]`` (mm), the voxel
    baseline over the box in ``extra``, or the view-plane regressor (``"pose"``)."""
    if kind == POSE_KIND:
        return build_model(POSE_KIND, net)
    if kind == "s2mnet":
        return build_model("s2mnet", net, template_points=torch.as_tensor(template_points),
                           displacement_scale_mm=float(extra["displacement_scale_mm"]))
    return build_model("voxel", net, box_centre=extra["box_centre"], box_half=extra["box_half"])


@dataclass
class LoadedRun:
    """A trained model in eval mode with what it needs to make meshes.

    Attributes
    ----------
    template : dict of ndarray
        The template's record (:mod:`sono3d.heart.template`) as numpy arrays (empty for a pose model).
    state : dict
        The whole checkpoint (its ``extra``, ``history``, ``input_check`` ...).
    """

    kind: str
    model: Any
    net_config: Any
    template: dict[str, Any]
    targets: str
    epoch: int
    path: Path
    state: dict[str, Any] | None = None


def load_run(run_dir: str | os.PathLike[str] | None, expect_kind: str | None = None) -> LoadedRun:
    """Load ``RUN_DIR/checkpoint.pt`` (``weights_only=True``) and rebuild its model on the CPU.

    Raises :class:`InputError` for a folder without a checkpoint, a file that is not an S2MNet-run
    checkpoint, or a checkpoint of another model kind than ``expect_kind``.
    """
    if run_dir is None:
        raise InputError("no run folder given")
    run = Path(run_dir)
    path = run / CHECKPOINT if run.is_dir() or not run.suffix else run
    if not run.exists():
        raise InputError(f"{run}: no such run folder")
    if not path.is_file():
        raise InputError(f"{run}: no {CHECKPOINT} (train a model into this folder first)")
    state = read_checkpoint(path)
    kind = state["kind"]
    if expect_kind is not None and kind != expect_kind:
        raise InputError(f"{run} holds a '{kind}' model checkpoint, but a '{expect_kind}' run is needed here")
    net = net_config(state, path)
    extra = state["extra"]
    tpl = record_arrays(state["template"])
    model = build_run_model(kind, net, tpl.get("points"), extra)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise InputError(f"{path}: its weights do not fit the network its config describes (a checkpoint of "
                         "another architecture; retrain it)") from None
    model.eval()
    return LoadedRun(kind, model, net, tpl, str(extra.get("targets", "identity")), int(state["epoch"]), run, state)
