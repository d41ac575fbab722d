"""Input check: how far each view lies from the views a run was trained on, and whether it is the view it is labelled as.

Beyond the paper: a network trained on pseudo-echo returns a plausible heart for any input (noise,
a blank frame, the views in the wrong order). This check says when an input is not something the
run can read.

Features
--------
For every view, :func:`view_features` concatenates (``F`` numbers)

* the network's own encoder features: the ResNet trunk's feature maps of the view
  (:meth:`~sono3d.heart.s2mnet.ViewEncoder.trunk`), average-pooled to 2x2 (so that the layout of
  the view, not only its texture, counts);
* the view's pixels area-averaged to 8x8 (what the network's linear global branch reads).

Each group is standardised by the training views' mean and spread, so that both weigh alike.

Model and calibration (:func:`fit_input_check`, run once after training on the training and
validation splits, stored in the checkpoint under ``input_check``)
-----------------------------------------------------------------------------------------------
* one Gaussian per view kind (A4C ... apical SAX) with a shared covariance (linear discriminant
  analysis), fitted on the training split's views of both phases; the covariance is shrunk towards
  its mean variance (``shrinkage`` 0.1) so that it can be inverted;
* the **distance** of a view: its Mahalanobis distance to the mean of the kind it is labelled as,
  divided by ``sqrt(F)``;
* the **threshold** of each kind: calibrated on the validation split (held out from training):
  ``exp(mean + Z * std)`` of the log distances of that kind's validation views, ``Z`` = 4 (a
  per-view false alarm of about 3e-5 were the log distances normal; their maximum is stored
  beside it);
* the **mismatch margin** of each kind: twice the largest, over the validation views, of
  ``d_own² - min_k d_k²`` (how much nearer another kind's mean was than the view's own; at least 0.05).

Verdict (:func:`check_views`)
-----------------------------
A view's **score** is its distance over its kind's threshold (maximum over phases); the input's
score is the largest view score. ``view_order_ok`` is false when

* the assignment of the present views' images to the present views' kinds that minimises the sum
  of squared distances (over phases; :func:`scipy.optimize.linear_sum_assignment`) is not the
  labelled one. Single short-axis views are ambiguous (a small heart's basal ring looks like a
  large heart's mid ring: on the 400-case cohort the nearest-mean classifier put 10 % of the SAX
  views at the wrong level), but within one input the comparison is relative, and the labelled
  order was the best assignment for every validation and test case while every swap of views,
  short-axis levels included, was not (2026-12-01); or
* a view is much nearer another kind's mean than its own (``d_own² - min_k d_k²`` over the kind's
  mismatch margin), which catches a lone view of the wrong kind.

``in_distribution`` is ``score <= 1`` and ``view_order_ok``. Missing views are not scored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from sono3d.errors import InputError
from sono3d.heart.s2mnet import encoder_input
from sono3d.simulate.echo_views import VIEW_NAMES

__all__ = ["FEATURES", "view_features", "fit_input_check", "check_views", "unavailable", "Z", "SHRINKAGE"]

FEATURES = "trunk2x2+pixels8x8-v1"
Z = 4.0
SHRINKAGE = 0.1
MIN_MARGIN = 0.05
_PIXELS = 8
_BATCH = 64


@torch.no_grad()
def view_features(model: Any, echo: np.ndarray) -> np.ndarray:
    """Raw features ``[N, V, F]`` (float64) of views ``echo [N, V, S, S]`` (the network's size, in [0, 1]).

    ``model`` is an S2MNet or voxel network (its ``encoder`` and ``config``).
    """
    x = torch.as_tensor(np.ascontiguousarray(echo, dtype=np.float32))
    if x.ndim != 4:
        raise InputError(f"views must have shape [N, V, S, S], got {tuple(x.shape)}")
    N, V = x.shape[:2]
    was_training = model.training
    model.eval()
    out = []
    for s in range(0, N, _BATCH):
        xb = x[s:s + _BATCH]
        f = model.encoder.trunk(encoder_input(xb, None, model.config))
        trunk = F.adaptive_avg_pool2d(f, 2).flatten(1)
        pix = F.adaptive_avg_pool2d(xb.reshape(-1, 1, *xb.shape[-2:]), _PIXELS).flatten(1)
        out.append(torch.cat([trunk, pix], dim=1).reshape(len(xb), V, -1))
    model.train(was_training)
    return torch.cat(out).double().numpy()


def _standardise(feats: np.ndarray, stats: dict[str, np.ndarray]) -> np.ndarray:
    return (feats - stats["feature_mean"]) / stats["feature_scale"]


def _distances(z: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Normalised Mahalanobis distances ``[..., K]`` of standardised features ``[..., F]`` to each kind mean."""
    d = z[..., None, :] - means  # [..., K, F]
    m2 = np.einsum("...kf,fg,...kg->...k", d, precision, d)
    return np.sqrt(np.maximum(m2, 0.0) / z.shape[-1])


def fit_input_check(model: Any, train_echo: np.ndarray, val_echo: np.ndarray) -> dict[str, Any]:
    """The input check's statistics (tensors and numbers, for the checkpoint; see the module notes).

    Parameters
    ----------
    train_echo, val_echo : ndarray [N, P, V, S, S]
        The training and validation splits' views (all phases), at the network's size.
    """
    V = train_echo.shape[2]
    ft = view_features(model, train_echo.reshape(-1, *train_echo.shape[2:]))  # [N*P, V, F]
    n_trunk = ft.shape[-1] - _PIXELS ** 2
    flat = ft.reshape(-1, ft.shape[-1])
    mean = flat.mean(0)
    # one spread per feature group (trunk, pixels), so that each group weighs alike
    scale = np.empty_like(mean)
    scale[:n_trunk] = max(float(flat[:, :n_trunk].std()), 1e-6)
    scale[n_trunk:] = max(float(flat[:, n_trunk:].std()), 1e-6)
    stats = {"feature_mean": mean, "feature_scale": scale}
    z = _standardise(ft, stats)
    means = z.mean(0)  # [V, F]
    resid = (z - means).reshape(-1, z.shape[-1])
    cov = resid.T @ resid / max(1, len(resid) - V)
    cov = (1 - SHRINKAGE) * cov + SHRINKAGE * np.trace(cov) / len(cov) * np.eye(len(cov))
    precision = np.linalg.inv(cov)
    zv = _standardise(view_features(model, val_echo.reshape(-1, *val_echo.shape[2:])), stats)
    dv = _distances(zv, means, precision)  # [M, V, K]
    own = dv[:, np.arange(V), np.arange(V)]  # [M, V]
    logs = np.log(own)
    thresholds = np.exp(logs.mean(0) + Z * logs.std(0))
    gap = (own ** 2 - (dv ** 2).min(-1)).max(0)  # [V]: how much nearer another kind's mean came
    margins = np.maximum(2.0 * gap, MIN_MARGIN)
    accuracy = float(np.mean(dv.argmin(-1) == np.arange(V)))
    return {
        "features": FEATURES,
        "feature_mean": torch.as_tensor(mean, dtype=torch.float64),
        "feature_scale": torch.as_tensor(scale, dtype=torch.float64),
        "means": torch.as_tensor(means, dtype=torch.float64),
        "precision": torch.as_tensor(precision, dtype=torch.float32),
        "thresholds": torch.as_tensor(thresholds, dtype=torch.float64),
        "margins": torch.as_tensor(margins, dtype=torch.float64),
        "val_max_distance": torch.as_tensor(own.max(0), dtype=torch.float64),
        "val_view_accuracy": accuracy,
        "n_train_views": int(len(ft)), "n_val_views": int(len(zv)), "z": Z, "shrinkage": SHRINKAGE,
    }


def unavailable(reason: str) -> dict[str, Any]:
    """The report's ``input_check`` entry when the check cannot run."""
    return {"available": False, "reason": reason, "per_view": [], "score": None, "in_distribution": None,
            "view_order_ok": None}


def check_views(model: Any, stats: dict[str, Any] | None, echo: np.ndarray,
                present: np.ndarray | None = None) -> dict[str, Any]:
    """The input check of views ``echo [P, V, S, S]`` (the network's size, in [0, 1]).

    ``stats`` is the checkpoint's ``input_check`` (``None`` for a run trained before it existed:
    the result then says that the check is unavailable).

    Returns
    -------
    dict with ``available``, ``per_view`` (one entry per view: ``view``, ``present``, ``score``,
    ``distance`` per phase, ``predicted_view``: the kind the view looks like, ``in_distribution``), ``score``,
    ``in_distribution``, ``view_order_ok`` and ``method``.
    """
    if stats is None:
        return unavailable("this run's checkpoint has no training-feature statistics (trained before the input "
                           "check existed); run `sono3d heart train COHORT RUN --resume` to add them")
    if stats.get("features") != FEATURES:
        return unavailable(f"the checkpoint's input-check statistics are of another kind ({stats.get('features')})")
    st = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in stats.items()}
    P, V = echo.shape[:2]
    present = np.ones(V, dtype=bool) if present is None else np.asarray(present, dtype=bool)
    z = _standardise(view_features(model, echo), st)  # [P, V, F]
    d = _distances(z, st["means"].astype(np.float64), st["precision"].astype(np.float64))  # [P, V, K]
    names = list(VIEW_NAMES)[:V]
    idx = np.flatnonzero(present)
    # the likeliest assignment of the present images to the present kinds (rows: images, cols: kinds)
    cost = (d[:, idx][:, :, idx] ** 2).sum(0)
    rows, cols = linear_sum_assignment(cost)
    joint_ok = cost[np.arange(len(idx)), np.arange(len(idx))].sum() <= cost[rows, cols].sum() * (1 + 1e-9)
    assigned = {int(v): int(v) for v in idx} if joint_ok else {int(idx[r]): int(idx[c]) for r, c in zip(rows, cols)}
    per_view, scores = [], []
    for v in range(V):
        if not present[v]:
            per_view.append({"view": names[v], "present": False, "score": None, "distance": None,
                             "predicted_view": None, "in_distribution": None})
            continue
        own = d[:, v, v]
        score = float(own.max() / st["thresholds"][v])
        mismatch = bool(((own ** 2 - (d[:, v] ** 2).min(-1)) > st["margins"][v]).any())
        nearest = names[int((d[:, v] ** 2).sum(0).argmin())]
        pred = names[assigned[v]] if assigned[v] != v else (nearest if mismatch else names[v])
        ok = pred == names[v]
        scores.append(score)
        per_view.append({"view": names[v], "present": True, "score": score, "distance": [float(x) for x in own],
                         "predicted_view": pred, "in_distribution": bool(score <= 1.0 and ok)})
    score = max(scores) if scores else None
    order_ok = all(p["predicted_view"] == p["view"] for p in per_view if p["present"])
    return {"available": True, "per_view": per_view, "score": score,
            "in_distribution": bool(score is not None and score <= 1.0 and order_ok), "view_order_ok": bool(order_ok),
            "method": f"{FEATURES}: LDA Mahalanobis distance over a threshold calibrated on the validation split "
                      f"(z = {st['z']}); view order = the likeliest assignment of the images to the given views"}
