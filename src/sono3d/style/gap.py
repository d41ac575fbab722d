"""The domain gap as a number: a classifier two-sample test (Lopez-Paz and Oquab 2017).

Two sets of images are each split in half (by recording or case when these are given, else at
random). A small CNN learns on one half of each to tell the sets apart and scores the other
halves, and the other way round (two-fold cross-fitting: every image gets a score from a network
that never saw it, or its recording). The ROC AUC of these scores is the gap: 0.5 when the sets
cannot be told apart, 1.0 when every image is placed on the right side. The interval is a
percentile bootstrap over the images (each set resampled on its own), so it reflects how few
images there are, not the randomness of training.

What the classifier may not use: every image is put on one common support (the intersection of
all masks given, else of all non-zero pixels), so fan shape and size do not count, and both sets are
brought to one size (area averaging). Grey levels, texture and anatomy all count: it is the whole
gap a network trained on one set would meet on the other.

The CNN: four 3x3 convolutions with stride 2 (16-32-64-64 channels, group normalisation, ReLU),
global average pooling and a linear output, trained with Adam and a class-balanced logistic loss
for a fixed number of epochs (no early stopping: nothing is tuned on the held-out halves).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

from sono3d.errors import InputError

__all__ = ["GapResult", "domain_gap", "roc_auc", "common_support"]


@dataclass
class GapResult:
    """Held-out ROC AUC of the classifier and its bootstrap interval."""

    auc: float
    ci95: tuple[float, float]
    n_real: int
    n_synthetic: int
    n_test_real: int
    n_test_synthetic: int
    train_accuracy: float
    size: int
    seed: int
    split_real: str = "images"
    split_synthetic: str = "images"

    def to_dict(self) -> dict[str, Any]:
        return {"auc": round(self.auc, 4), "ci95": [round(self.ci95[0], 4), round(self.ci95[1], 4)],
                "n_real": self.n_real, "n_synthetic": self.n_synthetic, "n_test_real": self.n_test_real,
                "n_test_synthetic": self.n_test_synthetic, "train_accuracy": round(self.train_accuracy, 4),
                "size": self.size, "seed": self.seed, "split_real": self.split_real,
                "split_synthetic": self.split_synthetic}


def roc_auc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """Area under the ROC curve (probability that a positive outscores a negative; ties count half)."""
    p, n = np.asarray(scores_pos, dtype=np.float64), np.asarray(scores_neg, dtype=np.float64)
    if len(p) == 0 or len(n) == 0:
        raise InputError("the AUC needs at least one score of each class")
    ranks = rankdata(np.concatenate([p, n]))
    return float((ranks[: len(p)].sum() - len(p) * (len(p) + 1) / 2) / (len(p) * len(n)))


def common_support(*sets: np.ndarray, masks: list[np.ndarray | None] | None = None) -> np.ndarray:
    """Pixels ``[H, W]`` inside every image's mask (or non-zero in every image when no mask is given)."""
    support = None
    for k, s in enumerate(sets):
        m = masks[k] if masks is not None and masks[k] is not None else (np.asarray(s) > 0)
        m = np.asarray(m, dtype=bool).reshape(-1, *np.asarray(s).shape[-2:]).all(axis=0)
        support = m if support is None else support & m
    if support is None or not support.any():
        raise InputError("the two sets share no pixels inside their fans (different view geometries?)")
    return support


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        chans = (1, 16, 32, 64, 64)
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.GroupNorm(4, b), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))[:, 0]


def _prepare(images: np.ndarray, support: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy((np.asarray(images, dtype=np.float32) * support)[:, None])
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] >= size else "bilinear")
    return x * 2.0 - 1.0


def _patch_corners(support: np.ndarray, patch: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` top-left corners ``[n, 2]`` of ``patch x patch`` windows lying (90 %) inside ``support``."""
    H, W = support.shape
    if patch > min(H, W):
        raise InputError(f"patches of {patch} pixels do not fit in {H}x{W} images")
    # fraction of each window inside the support, by a summed-area table
    sat = np.pad(support.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    inside = (sat[patch:, patch:] - sat[:-patch, patch:] - sat[patch:, :-patch] + sat[:-patch, :-patch]) / patch ** 2
    ok = np.argwhere(inside >= 0.9)
    if len(ok) == 0:
        raise InputError(f"no {patch}x{patch} window lies inside the fans' common support; use smaller --patch")
    return ok[rng.integers(len(ok), size=n)]


def _crops(x: torch.Tensor, corners: np.ndarray, patch: int) -> torch.Tensor:
    return torch.stack([x[i, :, r:r + patch, c:c + patch] for i, (r, c) in enumerate(corners)])


def _halves(n: int, groups: np.ndarray | None, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Which images fall in half A (bool ``[n]``), and how the set was split (``groups`` or ``images``).

    With two or more groups (recordings, cases) whole groups go to one half, largest first into the
    emptier half; otherwise the images are halved at random.
    """
    if groups is not None:
        g = np.asarray(groups)
        if len(g) != n:
            raise InputError(f"{len(g)} group labels for {n} images")
        labels = np.unique(g)
        if len(labels) >= 2:
            order = rng.permutation(len(labels))
            sizes = np.array([np.sum(g == labels[k]) for k in order])
            in_a = np.zeros(n, dtype=bool)
            filled = [0, 0]
            for k in np.argsort(-sizes, kind="stable"):
                side = 0 if filled[0] <= filled[1] else 1
                filled[side] += sizes[k]
                if side == 0:
                    in_a |= g == labels[order[k]]
            return in_a, "groups"
    in_a = np.zeros(n, dtype=bool)
    in_a[rng.permutation(n)[: n // 2]] = True
    return in_a, "images"


def domain_gap(real: np.ndarray, synthetic: np.ndarray, real_masks: np.ndarray | None = None,
               synthetic_masks: np.ndarray | None = None, size: int = 64, epochs: int = 40, seed: int = 0,
               n_boot: int = 2000, patch: int = 0, patches_per_image: int = 16,
               real_groups: np.ndarray | None = None, synthetic_groups: np.ndarray | None = None) -> GapResult:
    """Classifier two-sample test between ``real`` and ``synthetic`` images ``[N, H, W]`` in [0, 1].

    Each set is split in two halves; a classifier trained on halves A scores halves B and one
    trained on halves B scores halves A (two-fold cross-fitting), so every image gets a held-out
    score and the AUC is taken over all of them.

    Parameters
    ----------
    real, synthetic : ndarray [N, H, W]
        At least 4 images each, one size in common.
    real_masks, synthetic_masks : ndarray [N, H, W] bool, optional
        Fans; the classifier sees only the pixels inside all of them.
    size : int
        Side the whole images are brought to for the classifier (``patch = 0``).
    epochs : int
        Passes over the training halves.
    seed : int
        Seed of the split, the weights, the batches, the patches and the bootstrap.
    patch : int
        0: the classifier sees whole images. ``> 0``: it sees ``patch x patch`` windows (at the
        images' own pixel size) drawn anew each epoch inside the common support, and an image's
        score is the mean over ``patches_per_image`` fixed windows: the local appearance (grey
        levels, speckle, edges) without the global layout of the anatomy.
    real_groups, synthetic_groups : array [N], optional
        The recording (or case) of each image. With two or more groups a set is split by group, so
        the classifier is tested on recordings it never saw: frames of one cine loop are nearly
        copies of each other, and a split by frames would only ask whether an image comes from
        that loop.
    """
    r = np.asarray(real, dtype=np.float32)
    s = np.asarray(synthetic, dtype=np.float32)
    for name, a in (("real", r), ("synthetic", s)):
        if a.ndim != 3:
            raise InputError(f"{name} images must be [N, H, W], got shape {list(a.shape)}")
        if len(a) < 4:
            raise InputError(f"the gap test needs at least 4 {name} images, got {len(a)}")
        if not np.isfinite(a).all():
            raise InputError(f"{name} images contain NaN or infinite pixels")
    if r.shape[1:] != s.shape[1:]:
        raise InputError(f"real images are {r.shape[1]}x{r.shape[2]} and synthetic {s.shape[1]}x{s.shape[2]}: "
                         "bring them to one view geometry first")
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 0:
        raise InputError(f"patch must be a non-negative number of pixels, got {patch}")
    support = common_support(r, s, masks=[real_masks, synthetic_masks])
    side = size if patch == 0 else r.shape[-1]
    xr, xs = _prepare(r, support, side), _prepare(s, support, side)
    rng = np.random.default_rng(seed)
    half_r, split_r = _halves(len(r), real_groups, rng)
    half_s, split_s = _halves(len(s), synthetic_groups, rng)
    score_r, score_s = np.zeros(len(r)), np.zeros(len(s))
    accs = []
    for fold, (in_r, in_s) in enumerate(((half_r, half_s), (~half_r, ~half_s))):
        if in_r.sum() < 2 or in_s.sum() < 2 or (~in_r).sum() < 2 or (~in_s).sum() < 2:
            raise InputError("each half of the gap test needs at least 2 images of each set")
        net, acc = _fit(xr[in_r], xs[in_s], support, patch, epochs, seed + fold, rng)
        accs.append(acc)
        with torch.no_grad():
            score_r[~in_r] = _score(net, xr[~in_r], support, patch, patches_per_image, seed)
            score_s[~in_s] = _score(net, xs[~in_s], support, patch, patches_per_image, seed)
    auc = roc_auc(score_r, score_s)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        boots[b] = roc_auc(score_r[rng.integers(len(r), size=len(r))], score_s[rng.integers(len(s), size=len(s))])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return GapResult(auc, (float(lo), float(hi)), len(r), len(s), len(r), len(s), float(np.mean(accs)),
                     size if patch == 0 else patch, seed, split_r, split_s)


def _fit(xr: torch.Tensor, xs: torch.Tensor, support: np.ndarray, patch: int, epochs: int, seed: int,
         rng: np.random.Generator) -> tuple[nn.Module, float]:
    """Train the classifier on real ``xr`` (label 1) and synthetic ``xs`` (label 0), class-balanced."""
    x_train = torch.cat([xr, xs])
    y_train = torch.cat([torch.ones(len(xr)), torch.zeros(len(xs))])
    # each set weighs half of the loss whatever its size
    w = torch.cat([torch.full((len(xr),), 0.5 / len(xr)), torch.full((len(xs),), 0.5 / len(xs))])
    torch.manual_seed(seed)
    net = _Net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    n = len(x_train)
    bs = min(32, n)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        xe = x_train if patch == 0 else _crops(x_train, _patch_corners(support, patch, n, rng), patch)
        for k in range(0, n, bs):
            idx = perm[k:k + bs]
            logits = net(xe[idx])
            loss = (F.binary_cross_entropy_with_logits(logits, y_train[idx], reduction="none") * w[idx]).sum()
            loss = loss * n / len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float(((torch.from_numpy(_score(net, x_train, support, patch, 16, seed)) > 0).float()
                     == y_train).float().mean())
    return net, acc


def _score(net: nn.Module, x: torch.Tensor, support: np.ndarray, patch: int, k: int, seed: int) -> np.ndarray:
    """Logits per image (the mean over ``k`` fixed windows in patch mode)."""
    if patch == 0:
        return net(x).numpy()
    corners = _patch_corners(support, patch, k, np.random.default_rng([seed, 1]))
    crops = torch.cat([_crops(x[i:i + 1].expand(k, -1, -1, -1), corners, patch) for i in range(len(x))])
    return net(crops).numpy().reshape(len(x), k).mean(1)
