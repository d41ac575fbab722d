"""S2MNet and a Pix2Vox-style voxel baseline: six echo views to a heart shape.

S2MNet (the heart paper's Fig. 2): a shared 2D ResNet encoder (MONAI) over each view, three 2D
convolutions and one 3D convolution that lift the six views' features to a coarse 3D grid; a decoder
of six transposed 3D convolutions and a trilinear upsampling producing ``K`` coarse displacement
fields; a weight generator of six 3D convolutions giving one weight map per field; their
softmax-weighted sum is a dense displacement field over the template's bounding box, sampled
trilinearly at the template's vertices and added to them.

:class:`VoxelNet` shares the encoder and decodes an occupancy grid (``R**3`` logits) instead, the
voxel baseline of the paper's IoU comparison.

Additions to the paper's network (``NetConfig`` fields, on in the presets): coordinate channels
(CoordConv) in the encoder, a stride-16 trunk, a global affine head, and a *global branch*: a linear
map from the area-averaged pixels of the six views to ``D`` shape coordinates, decoded by a vertex
displacement basis (S2MNet) or a coarse occupancy grid (voxel baseline), started from its
closed-form least-squares fit (:func:`init_global_branch`). On the generated cohort the ResNet path
alone localised the heart poorly (lateral and out-of-plane centroid errors as large as their
spread); see ``docs/s2mnet.md``.

Fewer views (``NetConfig.view_presence``, trained with ``TrainConfig.view_dropout``): every
forward takes an optional presence flag per view ``[B, 6]`` (1 given, 0 missing). A missing view is
blank (zeros); the encoder sees its flag as one more constant input channel, and the global branch
replaces the missing views' pixels by their conditional mean given the present ones under a
probabilistic PCA of the training views (:class:`PixelImputer`), so that its closed-form linear map
stays the best linear guess for any subset (on the 400-case cohort, 2026-12-01: test vertex MSE of
the linear branch 2.33 mm² from six views, 2.46 from A4C + A2C imputed, 2.42 for a ridge fitted on
A4C + A2C alone).

Shapes: views ``[B, 6, H, W]`` (one grey channel per view, in [0, 1]); presence ``[B, 6]``; template
points ``[V, 3]`` in mm; displacements ``[B, V, 3]`` in mm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sono3d.errors import InputError

__all__ = ["NetConfig", "S2MNet", "VoxelNet", "ViewEncoder", "PixelImputer", "PoseNet", "build_model",
           "init_global_branch", "init_pose_pixels", "check_presence", "resnet_trunk", "encoder_input", "MODEL_KINDS",
           "POSE_KIND"]

_RESNET_LAYOUT = {
    "resnet10": ("basic", [1, 1, 1, 1]),
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
}

MODEL_KINDS = ("s2mnet", "voxel")  # the kinds sono3d.heart.training trains
POSE_KIND = "pose"  # the view-plane regressor (sono3d.heart.pose trains it)


@dataclass
class NetConfig:
    """Network sizes. ``small`` (ResNet10 at quarter width, 64 px) fits two CPU cores; ``paper`` is the paper's ResNet50 at 128 px.

    The field defaults are the first (2026-11-22) architecture, so that its checkpoints still load;
    the presets switch on coordinate channels, the stride-16 trunk, the global affine head and the
    global branch (2026-11-23: median IoU@128³ 0.77 -> 0.88, see ``docs/s2mnet.md``).

    Attributes
    ----------
    encoder : str
        MONAI ResNet depth: ``resnet10``, ``resnet18``, ``resnet34`` or ``resnet50``.
    width : float
        Multiplier on the ResNet's channel widths (64, 128, 256, 512).
    image_size : int
        Input view size in pixels (square).
    n_views : int
        Number of views (6: A4C, A2C, A3C, basal, mid, apical short axis).
    grid : int
        Edge of the coarse 3D grid the features are lifted to.
    lift_channels : int
        Channels per voxel of that grid.
    n_fields : int
        Number ``K`` of coarse displacement fields fused by the weight generator.
    field_size : int
        Edge of the final displacement field after trilinear upsampling (:meth:`S2MNet.field`).
    decoder_up : int
        How many of the decoder's six transposed convolutions double the grid (the others keep
        it): the coarse fields have edge ``grid * 2**decoder_up``. On a CPU the stride-1 layers at
        32³ dominate the cost, so ``small`` stops at 16³ (profiled 2026-11-23: the decoder at 32³
        cost twice the encoder).
    voxel_size : int
        Edge of the voxel baseline's occupancy grid.
    voxel_channels : int
        Occupancy channels of the voxel baseline: 1 (heart) or 2 (heart and LV cavity, for EF).
    coord_channels : bool
        CoordConv: pixel-coordinate maps (x, y in [-1, 1]) concatenated to each view and to the
        trunk's feature maps before the head, so that the encoder can say *where* a structure is,
        not only what it is (the echo-frame position of the heart is what the IoU punishes most).
    encoder_stride : int
        Output stride of the ResNet trunk: 32 (MONAI's) or 16 (the last stage keeps its
        resolution), e.g. 4x4 feature maps from 64 px views instead of 2x2.
    global_affine : bool
        S2MNet only: a head on the flattened (position-preserving) lifted features predicting a
        global affine map (12 numbers) of the template box, added to the dense displacement field.
    global_code : int
        Width ``D`` of a global branch (0: none): the six views, area-averaged to
        ``global_code_px`` pixels and flattened, map linearly to a ``D``-vector; S2MNet decodes it
        with a learned displacement basis of the template's vertices (``[D, V, 3]``, zero at
        the start), the voxel baseline with a coarse occupancy-logit grid (``[D, C, 16^3]``),
        both added to the convolutional output. It keeps the exact position of every structure in
        every view, which the ResNet's pooling blurs.
    global_code_px : int
        View size (pixels) seen by the global branch.
    view_presence : bool
        The network takes a presence flag per view (see the module notes): any non-empty subset of
        the views can be given. Set by training with ``TrainConfig.view_dropout > 0``.
    imputation_rank : int
        Components of the probabilistic PCA that imputes missing views for the global branch.
    """

    encoder: str = "resnet10"
    width: float = 0.25
    image_size: int = 64
    n_views: int = 6
    grid: int = 4
    lift_channels: int = 16
    n_fields: int = 4
    field_size: int = 64
    decoder_up: int = 2
    voxel_size: int = 32
    voxel_channels: int = 2
    # Defaults keep the first (2026-11-22) architecture, so its checkpoints still load.
    coord_channels: bool = False
    encoder_stride: int = 32
    global_affine: bool = False
    global_code: int = 0
    global_code_px: int = 32
    view_presence: bool = False
    imputation_rank: int = 256

    @classmethod
    def preset(cls, name: str = "small", **overrides: Any) -> "NetConfig":
        """A named network (``small``, ``paper`` or ``tiny``) with some fields replaced (``None``
        values in ``overrides`` are ignored)."""
        presets = {
            "small": cls(coord_channels=True, encoder_stride=16, global_affine=True, global_code=64),
            "paper": cls(encoder="resnet50", width=1.0, image_size=128, lift_channels=64, n_fields=6,
                         field_size=128, decoder_up=3, voxel_size=64, coord_channels=True, global_affine=True,
                         global_code=64),
            "tiny": cls(encoder="resnet10", width=0.25, image_size=64, lift_channels=8, n_fields=2,
                        field_size=32, decoder_up=1, voxel_size=16, coord_channels=True, encoder_stride=16,
                        global_affine=True, global_code=8, global_code_px=16),
        }
        if name not in presets:
            raise InputError(f"unknown network preset '{name}' (known: {', '.join(presets)})")
        return replace(presets[name], **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        if self.encoder not in _RESNET_LAYOUT:
            raise InputError(f"unknown encoder '{self.encoder}' (known: {', '.join(_RESNET_LAYOUT)})")
        if self.image_size % 32:
            raise InputError(f"image size must be a multiple of 32, got {self.image_size}")
        if not 0 <= self.decoder_up <= 5:
            raise InputError(f"decoder_up must be between 0 and 5, got {self.decoder_up}")
        if self.encoder_stride not in (16, 32):
            raise InputError(f"encoder_stride must be 16 or 32, got {self.encoder_stride}")
        if isinstance(self.global_code, bool) or not isinstance(self.global_code, int) or self.global_code < 0:
            raise InputError(f"global_code must be a non-negative integer, got {self.global_code}")
        if not isinstance(self.global_code_px, int) or self.global_code_px < 1:
            raise InputError(f"global_code_px must be a positive integer, got {self.global_code_px}")
        if self.voxel_channels not in (1, 2):
            raise InputError(f"voxel_channels must be 1 or 2, got {self.voxel_channels}")
        if isinstance(self.imputation_rank, bool) or not isinstance(self.imputation_rank, int) or self.imputation_rank < 1:
            raise InputError(f"imputation_rank must be a positive integer, got {self.imputation_rank}")


def check_presence(present: torch.Tensor | None, batch: int, n_views: int, accepts: bool) -> torch.Tensor | None:
    """Presence flags ``[B, n_views]`` as float (``None``: every view present).

    Raises :class:`InputError` for a wrong shape, a sample without any view, or missing views given
    to a network trained without presence flags (``accepts`` false).
    """
    if present is None:
        return None
    p = torch.as_tensor(present).to(torch.float32)
    if p.shape != (batch, n_views):
        raise InputError(f"presence flags must have shape [{batch}, {n_views}], got {tuple(p.shape)}")
    if bool((p.sum(1) < 1).any()):
        raise InputError("at least one view must be present")
    if bool((p < 1).any()) and not accepts:
        raise InputError("this network was trained with all six views; predicting from fewer views needs a run "
                         "trained with view dropout (sono3d heart train ... --view-dropout 0.5)")
    return p


def _with_coords(x: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C + 2, H, W]`` with the pixel-centre coordinates x, y in [-1, 1]."""
    N, _, H, W = x.shape
    ys = torch.linspace(-1, 1, H, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, W, device=x.device, dtype=x.dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.cat([x, torch.stack([xx, yy])[None].expand(N, -1, -1, -1)], dim=1)


def resnet_trunk(config: NetConfig, n_input: int) -> tuple[nn.Sequential, nn.Sequential, int]:
    """A MONAI 2D ResNet (``config.encoder``, ``config.width``) without its pooling head.

    Returns the stem (7x7 convolution, batch norm, ReLU, max pool), the four residual stages (the
    last at stride 1 when ``config.encoder_stride`` is 16) and the trunk's output channels.
    """
    from monai.networks.nets import ResNet

    block, layers = _RESNET_LAYOUT[config.encoder]
    planes = [max(8, int(round(p * config.width))) for p in (64, 128, 256, 512)]
    trunk = ResNet(block=block, layers=layers, block_inplanes=planes, spatial_dims=2, n_input_channels=n_input,
                   conv1_t_size=7, conv1_t_stride=2, feed_forward=False, num_classes=1)
    if config.encoder_stride == 16:
        # The last stage keeps its input's resolution: its first block's strided convolutions
        # (3x3 and the 1x1 shortcut) become stride 1; the weights' shapes do not change.
        for m in trunk.layer4[0].modules():
            if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
                m.stride = (1, 1)
    # Keep the convolutional trunk only: the avgpool/fc head would throw the spatial layout away.
    stem = nn.Sequential(trunk.conv1, trunk.bn1, trunk.act, trunk.maxpool)
    stages = nn.Sequential(trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4)
    return stem, stages, planes[3] * (4 if block == "bottleneck" else 1)


class ViewEncoder(nn.Module):
    """Shared 2D encoder: a MONAI ResNet trunk (no pooling head) then three 2D convolutions.

    Maps ``[B * n_views, 1, H, W]`` (``[B * n_views, 2, H, W]`` with ``view_presence``: the image and
    its presence flag) to ``[B * n_views, C, g, g]`` with ``g = config.grid``. With
    ``coord_channels`` the coordinate maps join the image and the head's input.
    """

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.coords = bool(config.coord_channels)
        extra = 2 if self.coords else 0
        # with view_presence, the view's presence flag is a second (constant) image channel
        n_in = 2 if config.view_presence else 1
        self.stem, self.layers, out_ch = resnet_trunk(config, n_in + extra)
        mid = max(32, out_ch // 2)
        self.head = nn.Sequential(
            nn.Conv2d(out_ch + extra, mid, 3, padding=1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, config.lift_channels, 1), nn.ReLU(inplace=True),
        )
        self.grid = config.grid

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The ResNet trunk's feature maps ``[N, C_trunk, h, w]`` of inputs ``[N, C_in, H, W]``."""
        return self.layers(self.stem(_with_coords(x) if self.coords else x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.trunk(x)
        f = self.head(_with_coords(f) if self.coords else f)
        if f.shape[-1] != self.grid or f.shape[-2] != self.grid:
            f = F.adaptive_avg_pool2d(f, self.grid)
        return f


def _fixed_signs(vh: torch.Tensor) -> torch.Tensor:
    """Singular vectors (rows of ``vh``) with a fixed sign: each row's largest-magnitude entry positive.

    An SVD defines each vector up to sign, and which sign LAPACK returns can change with the thread
    count; fixing it makes the closed-form starts (and so the checkpoints) the same in one process
    and in several.
    """
    idx = vh.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(torch.gather(vh, 1, idx))
    return vh * torch.where(sign == 0, torch.ones_like(sign), sign)


class PixelImputer(nn.Module):
    """Conditional-mean imputation of missing views under a probabilistic PCA of the training views.

    The views (``n_views`` blocks of ``P`` pixels, flattened to ``D = n_views * P``) are modelled as
    ``x = mean + Lᵀ z + e`` with ``z ~ N(0, I_K)`` and ``e ~ N(0, noise I)`` (Tipping & Bishop's
    PPCA: ``L`` holds the ``K`` leading principal directions scaled by ``sqrt(eigenvalue - noise)``,
    ``noise`` the mean of the remaining eigenvalues). Given the present views ``S``,
    ``E[z | x_S] = (L_S L_Sᵀ / noise + I)⁻¹ L_S (x_S - mean_S) / noise`` and a missing view's
    pixels become ``mean_M + L_Mᵀ E[z | x_S]``. The per-view Gram matrices ``L_v L_vᵀ`` are stored,
    so one sample costs a ``K x K`` solve. Buffers are zero until :meth:`fit` (the closed-form start
    of the global branch) sets them.
    """

    def __init__(self, n_views: int, pixels: int, rank: int) -> None:
        super().__init__()
        self.n_views, self.pixels, self.rank = n_views, pixels, rank
        self.register_buffer("mean", torch.zeros(n_views, pixels))
        self.register_buffer("loadings", torch.zeros(rank, n_views, pixels))
        self.register_buffer("gram", torch.zeros(n_views, rank, rank))
        self.register_buffer("noise", torch.ones(()))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> dict:
        """Fit on training views ``[N, n_views, P]``; returns ``{"rank", "noise", "explained"}``."""
        x = x.double().reshape(len(x), self.n_views * self.pixels)
        mu = x.mean(0)
        _, s, vt = torch.linalg.svd(x - mu, full_matrices=False)
        vt = _fixed_signs(vt)
        ev = s ** 2 / max(1, len(x) - 1)
        k = min(self.rank, max(1, len(ev) - 1))
        noise = float(ev[k:].mean()) if len(ev) > k else float(ev[-1]) * 0.5
        noise = max(noise, 1e-8)
        L = torch.zeros(self.rank, x.shape[1], dtype=torch.float64)
        L[:k] = vt[:k] * torch.sqrt((ev[:k] - noise).clamp_min(0.0))[:, None]
        L = L.reshape(self.rank, self.n_views, self.pixels)
        self.mean.copy_(mu.reshape(self.n_views, self.pixels).float())
        self.loadings.copy_(L.float())
        self.gram.copy_(torch.einsum("kvp,lvp->vkl", L, L).float())
        self.noise.fill_(noise)
        return {"rank": k, "noise": noise, "explained": float(ev[:k].sum() / ev.sum().clamp_min(1e-12))}

    def forward(self, x: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
        """Views ``[B, n_views, P]`` with the missing ones (``present [B, n_views]`` = 0) imputed."""
        if present is None or bool((present > 0).all()):
            return x
        p = present.to(x.dtype)
        d = (x - self.mean) * p[:, :, None]
        rhs = torch.einsum("kvp,bvp->bk", self.loadings, d) / self.noise
        # One K x K system per presence pattern (at most 2^n_views), not a batched solve: on the CPU a
        # batched LU runs MKL's threaded getrf inside torch's own parallel loop, and that nesting can
        # spin forever after the thread count has been changed (seen in the test suite).
        eye = torch.eye(self.rank, dtype=x.dtype, device=x.device)
        patterns, which = torch.unique(present > 0, dim=0, return_inverse=True)
        z = rhs.new_zeros(rhs.shape)
        for j, pattern in enumerate(patterns):
            rows = (which == j).nonzero()[:, 0]
            A = torch.einsum("v,vkl->kl", pattern.to(x.dtype), self.gram) / self.noise + eye
            z = z.index_put((rows,), torch.linalg.solve(A, rhs[rows].T).T)
        guess = self.mean + torch.einsum("bk,kvp->bvp", z, self.loadings)
        return x * p[:, :, None] + guess * (1 - p[:, :, None])


class _GlobalCode(nn.Module):
    """Views ``[B, V, H, W]`` -> a global code ``[B, D]``: area-average to ``px`` pixels, flatten, linear.

    With ``view_presence`` the missing views are imputed first (:class:`PixelImputer`).
    """

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.px = config.global_code_px
        self.linear = nn.Linear(config.n_views * self.px ** 2, config.global_code)
        self.imputer = PixelImputer(config.n_views, self.px ** 2, config.imputation_rank) \
            if config.view_presence else None

    def pixels(self, views: torch.Tensor) -> torch.Tensor:
        """The branch's centred pixels ``[B, V, px * px]``."""
        x = views
        if x.shape[-1] != self.px or x.shape[-2] != self.px:
            x = F.adaptive_avg_pool2d(x, self.px)
        # Centre the pixels so that the code starts near zero for the mean heart.
        return x.flatten(2) - 0.5

    def forward(self, views: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pixels(views)
        if self.imputer is not None:
            x = self.imputer(x, present)
        return self.linear(x.flatten(1))


class _Lift(nn.Module):
    """Six views' 2D feature maps ``[B, 6, C, g, g]`` -> a 3D grid ``[B, C3, g, g, g]``.

    The views are stacked along a depth axis of length ``6`` (their order is fixed: the standard
    views are different anatomy, not interchangeable), mixed by one 3D convolution, and resampled to
    depth ``g``.
    """

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        c = config.lift_channels
        self.conv = nn.Sequential(nn.Conv3d(c, 2 * c, 3, padding=1), nn.BatchNorm3d(2 * c), nn.ReLU(inplace=True))
        self.mix = nn.Linear(config.n_views, config.grid)
        self.out_channels = 2 * c

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        # feats: [B, V, C, g, g] -> [B, C, g, g, V] -> depth mix V -> g -> [B, C, g, g, g]
        x = feats.permute(0, 2, 3, 4, 1)
        x = self.mix(x).permute(0, 1, 4, 2, 3).contiguous()
        return self.conv(x)


def encoder_input(views: torch.Tensor, present: torch.Tensor | None, config: NetConfig) -> torch.Tensor:
    """The encoder's input ``[B * V, C_in, H, W]`` of views ``[B, V, H, W]``: each view, blanked when
    missing, and (``view_presence``) its presence flag as a constant channel."""
    if views.ndim != 4 or views.shape[1] != config.n_views:
        raise InputError(f"views must have shape [B, {config.n_views}, H, W], got {tuple(views.shape)}")
    B, V, H, W = views.shape
    x = views.reshape(B * V, 1, H, W)
    if not config.view_presence:
        return x
    p = torch.ones(B * V, device=views.device, dtype=views.dtype) if present is None else \
        present.reshape(B * V).to(views.dtype)
    return torch.cat([x * p[:, None, None, None], p[:, None, None, None].expand(-1, 1, H, W)], dim=1)


def _encode(encoder: ViewEncoder, lift: _Lift, views: torch.Tensor, config: NetConfig,
            present: torch.Tensor | None) -> torch.Tensor:
    f = encoder(encoder_input(views, present, config))
    f = f.reshape(views.shape[0], views.shape[1], *f.shape[1:])
    return lift(f)


class S2MNet(nn.Module):
    """Six views to a dense displacement field over the template's bounding box.

    Parameters
    ----------
    config : NetConfig
    template_points : Tensor, shape (V, 3)
        The template's vertices in mm; their bounding box (padded by ``margin``) is the field's
        domain, stored in the module's buffers so that checkpoints carry it.
    displacement_scale_mm : float
        The network's raw output is multiplied by this (roughly the displacements' spread), so that
        its weights work at unit scale.
    """

    def __init__(self, config: NetConfig, template_points: torch.Tensor, displacement_scale_mm: float = 10.0,
                 margin: float = 0.1) -> None:
        super().__init__()
        self.config = config
        pts = torch.as_tensor(template_points, dtype=torch.float32)
        lo, hi = pts.min(0).values, pts.max(0).values
        centre, half = (lo + hi) / 2, (hi - lo) / 2 * (1 + margin)
        self.register_buffer("template", pts.clone())
        self.register_buffer("box_centre", centre)
        self.register_buffer("box_half", half.clamp_min(1e-3))
        self.register_buffer("displacement_scale", torch.tensor(float(displacement_scale_mm)))
        self.encoder = ViewEncoder(config)
        self.lift = _Lift(config)
        c = self.lift.out_channels
        K = config.n_fields
        # Six transposed 3D convolutions: the first ``decoder_up`` double the grid, the rest refine it.
        chans = [c, c, max(16, c // 2), max(16, c // 4), max(16, c // 4), max(16, c // 4)]
        layers: list[nn.Module] = []
        for i in range(6):
            cin = chans[i]
            cout = chans[i + 1] if i < 5 else 3 * K
            if i < config.decoder_up:
                layers.append(nn.ConvTranspose3d(cin, cout, 4, stride=2, padding=1))
            else:
                layers.append(nn.ConvTranspose3d(cin, cout, 3, stride=1, padding=1))
            if i < 5:
                layers += [nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
        self.decoder = nn.Sequential(*layers)
        wg: list[nn.Module] = []
        for i in range(6):
            cout = K if i == 5 else c
            wg.append(nn.Conv3d(c, cout, 3, padding=1))
            if i < 5:
                wg += [nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
        self.weight_generator = nn.Sequential(*wg)
        self.affine = None
        if config.global_affine:
            g = config.grid
            self.affine = nn.Sequential(nn.Flatten(), nn.Linear(c * g ** 3, 64), nn.ReLU(inplace=True), nn.Linear(64, 12))
            nn.init.zeros_(self.affine[-1].weight)
            nn.init.zeros_(self.affine[-1].bias)
        self.code = self.basis = None
        if config.global_code > 0:
            self.code = _GlobalCode(config)
            self.basis = nn.Linear(config.global_code, 3 * len(pts))
            nn.init.zeros_(self.basis.weight)
            nn.init.zeros_(self.basis.bias)
        # Start from the template: zero displacement until trained.
        last = self.decoder[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _coarse(self, views: torch.Tensor, present: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Coarse fields ``[B, 3K, G, G, G]`` (``G = g * 2**decoder_up``), weight logits ``[B, K, g, g, g]``
        and the global affine parameters ``[B, 12]`` (``None`` without ``global_affine``)."""
        z = _encode(self.encoder, self.lift, views, self.config, present)
        aff = self.affine(z) if self.affine is not None else None
        return self.decoder(z), self.weight_generator(z), aff

    def _fuse_at(self, coarse: torch.Tensor, weight_logits: torch.Tensor, grid: torch.Tensor,
                 aff: torch.Tensor | None = None) -> torch.Tensor:
        """Fused unit-scale displacement ``[B, 3, *grid.shape[1:-1]]`` at normalised positions ``grid``
        (``[B, ..., 3]``, x, y, z in [-1, 1]), plus the global affine part ``A g + t`` when given.

        Trilinear interpolation of the coarse fields and the weight maps at the query positions is the
        paper's trilinear upsampling layer evaluated exactly where it is needed (the vertices), rather
        than on a dense grid that would then be sampled again.
        """
        B = coarse.shape[0]
        K = self.config.n_fields
        f = F.grid_sample(coarse, grid, mode="bilinear", align_corners=True, padding_mode="border")
        w = F.grid_sample(weight_logits, grid, mode="bilinear", align_corners=True, padding_mode="border")
        f = f.reshape(B, K, 3, *f.shape[2:])
        d = (f * w.softmax(dim=1)[:, :, None]).sum(dim=1)
        if aff is not None:
            A, t = aff[:, :9].reshape(B, 3, 3), aff[:, 9:]
            lin = torch.einsum("bij,b...j->bi...", A, grid) + t.reshape(B, 3, *([1] * (grid.ndim - 2)))
            d = d + lin
        return d

    def field(self, views: torch.Tensor, size: int | None = None, present: torch.Tensor | None = None
              ) -> torch.Tensor:
        """The fused displacement field in mm, ``[B, 3, S, S, S]`` over the template box (``S`` =
        ``size`` or ``config.field_size``), indexed ``[z, y, x]``."""
        S = size or self.config.field_size
        present = check_presence(present, len(views), self.config.n_views, self.config.view_presence)
        coarse, wl, aff = self._coarse(views, present)
        lin = torch.linspace(-1, 1, S, device=coarse.device)
        zz, yy, xx = torch.meshgrid(lin, lin, lin, indexing="ij")
        grid = torch.stack([xx, yy, zz], dim=-1)[None].expand(coarse.shape[0], -1, -1, -1, -1)
        return self._fuse_at(coarse, wl, grid, aff) * self.displacement_scale

    def displacements_at(self, views: torch.Tensor, points: torch.Tensor, present: torch.Tensor | None = None
                         ) -> torch.Tensor:
        """Displacements (mm) ``[B, P, 3]`` at arbitrary points ``[P, 3]`` (mm)."""
        present = check_presence(present, len(views), self.config.n_views, self.config.view_presence)
        coarse, wl, aff = self._coarse(views, present)
        g = (points - self.box_centre) / self.box_half  # [-1, 1] in x, y, z
        # grid_sample's last axis is (x, y, z) indexing (W, H, D) of the volume.
        grid = g[None, :, None, None, :].expand(coarse.shape[0], -1, 1, 1, 3)
        d = self._fuse_at(coarse, wl, grid, aff)[:, :, :, 0, 0]
        return d.transpose(1, 2) * self.displacement_scale

    def forward(self, views: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """Displacements of the template's vertices, ``[B, V, 3]`` in mm (field plus, with
        ``global_code``, the basis term, which lives on the template's vertices only).

        ``present [B, n_views]`` (optional, ``view_presence`` networks): which views are given.
        """
        present = check_presence(present, len(views), self.config.n_views, self.config.view_presence)
        d = self.displacements_at(views, self.template, present)
        if self.code is not None:
            d = d + self.basis(self.code(views, present)).reshape(d.shape) * self.displacement_scale
        return d

    def predict_points(self, views: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted mesh vertices ``[B, V, 3]`` in mm (template plus displacement)."""
        return self.template[None] + self(views, present)


class VoxelNet(nn.Module):
    """Pix2Vox-style baseline: the same encoder, a 3D decoder to occupancy logits ``[B, C, R, R, R]``.

    ``C = config.voxel_channels``: channel 0 the whole heart, channel 1 (when present) the LV
    cavity, from which the baseline's LV volumes and EF come. The grid spans a fixed box
    (``box_centre`` +- ``box_half`` mm, stored as buffers), indexed ``[z, y, x]`` like the
    displacement field; voxel ``k`` of an axis covers ``[-1 + 2k/R, -1 + 2(k+1)/R]`` in normalised box
    coordinates (``align_corners=False``).
    """

    _COARSE = 16  # edge of the global branch's coarse logit grid

    def __init__(self, config: NetConfig, box_centre: torch.Tensor, box_half: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("box_centre", torch.as_tensor(box_centre, dtype=torch.float32).clone())
        self.register_buffer("box_half", torch.as_tensor(box_half, dtype=torch.float32).clone())
        self.encoder = ViewEncoder(config)
        self.lift = _Lift(config)
        c = self.lift.out_channels
        R = config.voxel_size
        n_up = max(0, int(round(torch.log2(torch.tensor(R / config.grid)).item())))
        layers: list[nn.Module] = []
        cin = c
        for i in range(n_up):
            cout = max(8, cin // 2)
            layers += [nn.ConvTranspose3d(cin, cout, 4, stride=2, padding=1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
            cin = cout
        layers.append(nn.Conv3d(cin, config.voxel_channels, 3, padding=1))
        self.decoder = nn.Sequential(*layers)
        self.code = self.coarse = None
        if config.global_code > 0:
            self.code = _GlobalCode(config)
            self.coarse = nn.Linear(config.global_code, config.voxel_channels * self._COARSE ** 3)
            nn.init.zeros_(self.coarse.weight)
            nn.init.zeros_(self.coarse.bias)

    def forward(self, views: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """Occupancy logits ``[B, C, R, R, R]`` (``present`` as in :meth:`S2MNet.forward`)."""
        present = check_presence(present, len(views), self.config.n_views, self.config.view_presence)
        z = _encode(self.encoder, self.lift, views, self.config, present)
        logits = self.decoder(z)
        R = self.config.voxel_size
        if logits.shape[-1] != R:
            logits = F.interpolate(logits, size=(R, R, R), mode="trilinear", align_corners=False)
        if self.code is not None:
            c = self._COARSE
            g = self.coarse(self.code(views, present)).reshape(len(views), self.config.voxel_channels, c, c, c)
            logits = logits + F.interpolate(g, size=(R, R, R), mode="trilinear", align_corners=False)
        return logits


class PoseNet(nn.Module):
    """The view-plane regressor (the heart paper's section 5.3): one view to its plane in the echo frame.

    A ResNet trunk (:func:`resnet_trunk`, with coordinate channels when ``config.coord_channels``),
    its feature map average-pooled to 4x4 (which keeps where things are) and flattened, then two
    branches of three fully connected layers: one gives the plane's three angles, the other the
    position of its sector apex. Each branch has one output row per view kind (A4C ... apical SAX),
    chosen by the view's index, so one network serves the six views.

    Outputs are normalised per view kind ``v``:

    * angles ``a`` (3): the plane's rotation is ``R = rotation_mean[v] @ euler_to_matrix(a * angle_scale)``
      (radians in :func:`sono3d.geometry.transforms.euler_to_matrix`, ``R = Rz Ry Rx``; columns:
      the image's column direction, its row direction (the beam), the normal), ``rotation_mean[v]``
      the training views' mean rotation of that kind;
    * position ``q`` (3): the sector apex is ``position_mean[v] + q * position_scale[v]`` (mm).

    To the branches a linear pixel term is added (as S2MNet's global branch): the view area-averaged
    to ``config.global_code_px`` pixels, times a per-kind matrix fitted in closed form by ridge
    regression on the training views (:func:`init_pose_pixels`; buffers, not trained). The
    branches' last layers start at zero, so training starts from that fit and learns what it leaves.
    """

    POOL = 4

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        self.coords = bool(config.coord_channels)
        self.stem, self.layers, ch = resnet_trunk(config, 1 + (2 if self.coords else 0))
        V = config.n_views
        n = ch * self.POOL ** 2

        def branch() -> nn.Sequential:
            b = nn.Sequential(nn.Linear(n + V, 256), nn.ReLU(inplace=True), nn.Linear(256, 128), nn.ReLU(inplace=True),
                              nn.Linear(128, 3 * V))
            nn.init.zeros_(b[-1].weight)
            nn.init.zeros_(b[-1].bias)
            return b

        self.angles = branch()
        self.position = branch()
        px = config.global_code_px
        self.register_buffer("pixel_weight", torch.zeros(V, 6, px * px))
        self.register_buffer("pixel_bias", torch.zeros(V, 6))
        self.register_buffer("rotation_mean", torch.eye(3).repeat(V, 1, 1))
        self.register_buffer("position_mean", torch.zeros(V, 3))
        self.register_buffer("position_scale", torch.ones(V, 3))
        self.register_buffer("angle_scale", torch.tensor(float(np.radians(3.0))))

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Centred, area-averaged pixels ``[B, px * px]`` of views ``[B, 1, H, W]``."""
        px = self.config.global_code_px
        x = images if images.shape[-1] == px and images.shape[-2] == px else F.adaptive_avg_pool2d(images, px)
        return x.flatten(1) - 0.5

    def forward(self, images: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Normalised angles and position ``[B, 6]`` of views ``[B, 1, H, W]`` of kinds ``view [B]`` (int)."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise InputError(f"views must have shape [B, 1, H, W], got {tuple(images.shape)}")
        view = torch.as_tensor(view, dtype=torch.long, device=images.device)
        if view.shape != (len(images),) or bool((view < 0).any()) or bool((view >= self.config.n_views).any()):
            raise InputError(f"view kinds must be {len(images)} integers in [0, {self.config.n_views})")
        x = _with_coords(images) if self.coords else images
        f = F.adaptive_avg_pool2d(self.layers(self.stem(x)), self.POOL).flatten(1)
        f = torch.cat([f, F.one_hot(view, self.config.n_views).to(f.dtype)], dim=1)
        rows = torch.arange(len(images), device=images.device)
        a = self.angles(f).reshape(len(images), -1, 3)[rows, view]
        q = self.position(f).reshape(len(images), -1, 3)[rows, view]
        lin = torch.einsum("bkp,bp->bk", self.pixel_weight[view], self.pixels(images)) + self.pixel_bias[view]
        return torch.cat([a, q], dim=1) + lin


@torch.no_grad()
def init_pose_pixels(model: PoseNet, images: torch.Tensor, view: torch.Tensor, targets: torch.Tensor,
                     lam: float = 3.0) -> None:
    """Closed-form start of :class:`PoseNet`'s linear pixel term: one ridge regression per view kind
    from the area-averaged pixels of ``images [N, 1, H, W]`` to the normalised ``targets [N, 6]``."""
    x = model.pixels(images.float())
    for v in range(model.config.n_views):
        m = view == v
        if int(m.sum()) < 2:
            continue
        W, b = _ridge(x[m], targets[m].double(), lam)
        model.pixel_weight[v].copy_(W.float())
        model.pixel_bias[v].copy_(b.float())


@dataclass
class ModelSpec:
    """What a checkpoint needs to rebuild its network."""

    kind: str
    net: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def build_model(kind: str, config: NetConfig, **kwargs: torch.Tensor | float) -> nn.Module:
    """``S2MNet`` (needs ``template_points``, optional ``displacement_scale_mm``), ``VoxelNet``
    (needs ``box_centre`` and ``box_half``) or ``PoseNet`` (``"pose"``, needs nothing)."""
    if kind == POSE_KIND:
        return PoseNet(config)
    if kind == "s2mnet":
        return S2MNet(config, kwargs["template_points"], float(kwargs.get("displacement_scale_mm", 10.0)))
    if kind == "voxel":
        return VoxelNet(config, kwargs["box_centre"], kwargs["box_half"])
    raise InputError(f"unknown model '{kind}' (known: {', '.join(MODEL_KINDS + (POSE_KIND,))})")


def _ridge(x: torch.Tensor, z: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regression ``z ~ W x + b`` in float64, solved in its dual (``N`` samples << features).

    Returns ``W [Dz, Dx]`` and ``b [Dz]``.
    """
    x, z = x.double(), z.double()
    xm, zm = x.mean(0), z.mean(0)
    xc = x - xm
    alpha = torch.linalg.solve(xc @ xc.T + lam * torch.eye(len(x), dtype=x.dtype), z - zm)
    W = (xc.T @ alpha).T
    return W, zm - W @ xm


@torch.no_grad()
def init_global_branch(model: nn.Module, views: torch.Tensor, targets: torch.Tensor, lam: float = 3.0) -> dict:
    """Closed-form start of the global branch (``NetConfig.global_code``) on training data.

    The branch is linear in the pixels, so its best start is a least-squares fit: the ``D`` leading
    principal components of the targets (their shape space) regressed on the pixels by ridge
    regression (``lam``; pixels in [0, 1]). The convolutional network then learns what that linear
    map cannot. Gradient descent alone did not find it: 6 epochs left the lateral and out-of-plane
    heart position unlearnt (2026-11-23), which this fit gets to 0.6 and 1.2 mm.

    Parameters
    ----------
    model : S2MNet or VoxelNet with ``global_code > 0``
    views : Tensor [N, n_views, H, W]
        Training views (not augmented).
    targets : Tensor
        S2MNet: displacements ``[N, V, 3]`` in mm. VoxelNet: occupancy ``[N, C, R, R, R]`` (0/1).
    lam : float
        Ridge penalty.

    Returns
    -------
    dict with ``explained`` (fraction of the targets' variance in the ``D`` components) and, for a
    ``view_presence`` network, ``imputation`` (:meth:`PixelImputer.fit`'s summary; the imputer is
    fitted on the same pixels).
    """
    if model.code is None:
        raise InputError("this network has no global branch (global_code = 0)")
    D = model.config.global_code
    pix = model.code.pixels(views.float())
    x = pix.flatten(1)
    extra = {}
    if model.code.imputer is not None:
        extra["imputation"] = model.code.imputer.fit(pix)
    if isinstance(model, S2MNet):
        y = targets.reshape(len(targets), -1).double() / float(model.displacement_scale)
    else:
        c = model._COARSE
        occ = F.adaptive_avg_pool3d(targets.double(), c).clamp(0.02, 0.98)
        y = torch.log(occ / (1 - occ)).reshape(len(targets), -1)  # coarse logits of the occupied fraction
    ym = y.mean(0)
    _, S, Vh = torch.linalg.svd(y - ym, full_matrices=False)
    Vh = _fixed_signs(Vh)
    # Centred targets of N samples have rank <= N - 1: a direction beyond the rank (a singular value
    # at the float32 round-off of the data, below 1e-5 of the first) is arbitrary, and LAPACK returns
    # another one for another thread count.
    k = min(D, int((S > S[0] * 1e-5).sum()))
    basis = torch.zeros(y.shape[1], D, dtype=torch.float64)
    basis[:, :k] = Vh[:k].T
    zc = (y - ym) @ basis  # [N, D] shape coordinates
    W, b = _ridge(x, zc, lam)
    model.code.linear.weight.copy_(W.float())
    model.code.linear.bias.copy_(b.float())
    out = model.basis if isinstance(model, S2MNet) else model.coarse
    out.weight.copy_(basis.float())
    out.bias.copy_(ym.float())
    return {"explained": float((S[:k] ** 2).sum() / (S ** 2).sum().clamp_min(1e-12)), **extra}
