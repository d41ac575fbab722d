"""Tracked sweeps in PLUS / 3D Slicer sequence files, and PLUS configuration files.

Formats
-------
* ``.igs.mha`` / ``.seq.mha`` / ``.mha``: PLUS sequence metafile. A MetaImage of ``W x H x N``
  frames whose header carries per-frame fields ``Seq_Frame0000_<From>To<To>Transform`` (16
  numbers, row-major 4x4), ``..._<From>To<To>TransformStatus`` (``OK``/``INVALID``),
  ``Seq_Frame0000_Timestamp`` and ``Seq_Frame0000_ImageStatus``.
* ``.seq.nrrd`` / ``.igs.nrrd`` / ``.nrrd``: the same fields as NRRD key/value pairs
  (``Seq_Frame0000_ImageToReferenceTransform:=...``), as PLUS/IGSIO write them.

The project's own sweep file is a ``.seq.nrrd`` (or ``.igs.mha``) holding float32 frames
(``W x H x 1 x N``, so 3D Slicer's volume-sequence reader and the IGSIO sequence importer both
open it), one ``ImageToReferenceTransform`` per frame, and ``sono3d_*`` fields for the pixel
spacing, sector geometry, frame times and JSON metadata, so that write -> read is bit-exact.

Frames and poses
----------------
PLUS images have pixel spacing 1 and carry the physical scale in the ``ImageToProbe``
calibration; ``image_to_world = LPS_TO_RAS @ ImageToReference`` with
``ImageToReference = inv(ReferenceToTracker) @ ProbeToTracker @ ImageToProbe`` (any chain of
transforms from the reconstruction's image frame to its reference frame is found). The PLUS
reference frame is taken as LPS, like every ITK file, so a sweep read here lines up with PLUS's
own reconstructed ``.mha`` read by :func:`~sono3d.io.read_volume`. The pixel spacing is the
column norms of the calibration; the third column of ``image_to_world`` is replaced by the unit
plane normal (PLUS scales it too, but it never touches a 2D pixel).

``UltrasoundImageOrientation`` (``MF``, ``MN``, ``UF``, ``UN``): frames are flipped to ``MF`` (row 0
at the probe face, columns towards the marked side), exactly as PLUS does when it loads a file;
the transforms refer to the ``MF`` image, so they are kept as they are.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import FileFormatError, InputError
from sono3d.io.atomic import atomic_path, full_suffix
from sono3d.io.metaimage import format_numbers, read_metaimage, write_metaimage
from sono3d.io.registry import check_file
from sono3d.io.volumes import LPS_TO_RAS, _read_nrrd
from sono3d.types import Sector, Sweep, frame_dtype

__all__ = ["PlusConfig", "read_plus_config", "read_sequence", "write_seq_nrrd", "write_seq_mha",
           "frames_to_float", "find_plus_config"]

_FRAME_FIELD = re.compile(r"^Seq_Frame(\d+)_(.+)$", re.IGNORECASE)
_TRANSFORM = re.compile(r"^(\w+?)To([A-Z]\w*?)Transform$")
_ORIENTATIONS = {"MF", "MN", "UF", "UN"}


# --- PLUS configuration --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PlusConfig:
    """What sono3d uses from a PLUS configuration XML (``PlusDeviceSet_*.xml``).

    Attributes
    ----------
    path : Path
    transforms : dict[(str, str), ndarray (4, 4)]
        Static transforms of ``CoordinateDefinitions``, keyed ``(From, To)``.
    image_frame, reference_frame : str
        ``ImageCoordinateFrame`` / ``ReferenceCoordinateFrame`` of the ``VolumeReconstruction``
        element (``"Image"`` / ``"Reference"`` when absent).
    output_spacing_mm : (float, float, float) or None
        ``OutputSpacing`` of the reconstruction.
    output_origin_mm : (float, float, float) or None
        ``OutputOrigin``, in the PLUS reference frame (LPS, see :meth:`output_affine_ras`).
    output_extent : (int, int, int, int, int, int) or None
        ``OutputExtent``: ``(i0, i1, j0, j1, k0, k1)`` voxel index ranges.
    clip_origin_px, clip_size_px : (int, int) or None
        ``ClipRectangleOrigin`` / ``ClipRectangleSize``: ``(col, row)`` of the kept rectangle's
        corner and its ``(width, height)`` in pixels of the ``MF`` image.
    fan_origin_px : (float, float) or None
        ``FanOriginPixel`` (or older ``FanOrigin``): fan apex ``(col, row)`` in pixels.
    fan_angles_deg : (float, float) or None
        ``FanAnglesDeg`` (or ``FanAngles``): left and right fan edge angles from the +row axis.
    fan_radius_px : (float, float) or None
        ``FanRadiusStartPixel`` / ``FanRadiusStopPixel`` (or ``0`` / ``FanDepth``).
    reconstruction : dict[str, str]
        All attributes of the ``VolumeReconstruction`` element, as text.
    hole_filling : tuple of dict[str, str]
        Attributes of every ``HoleFillingElement`` (under ``<HoleFilling>``), in order, as text
        (turned into kernels by :func:`sono3d.sweep.compound.read_plus_hole_filling`).
    """

    path: Path
    transforms: dict[tuple[str, str], np.ndarray]
    image_frame: str = "Image"
    reference_frame: str = "Reference"
    output_spacing_mm: tuple[float, float, float] | None = None
    output_origin_mm: tuple[float, float, float] | None = None
    output_extent: tuple[int, int, int, int, int, int] | None = None
    clip_origin_px: tuple[int, int] | None = None
    clip_size_px: tuple[int, int] | None = None
    fan_origin_px: tuple[float, float] | None = None
    fan_angles_deg: tuple[float, float] | None = None
    fan_radius_px: tuple[float, float] | None = None
    reconstruction: dict[str, str] = field(default_factory=dict)
    hole_filling: tuple[dict[str, str], ...] = ()

    @property
    def image_to_probe(self) -> np.ndarray | None:
        """The ``Image`` -> ``Probe`` calibration (pixel spacing folded in), if defined."""
        return self.transforms.get((self.image_frame, "Probe"))

    @property
    def pixel_spacing_mm(self) -> tuple[float, float] | None:
        """``(dy, dx)``: column norms of the calibration from the image frame, if any."""
        m = next((m for (a, _), m in self.transforms.items() if a == self.image_frame), None)
        if m is None:
            return None
        s = np.linalg.norm(m[:3, :3], axis=0)
        return float(s[1]), float(s[0])

    def output_affine_ras(self) -> np.ndarray | None:
        """Voxel ``(i, j, k, 1)`` -> RAS mm of the configured output grid (needs origin and spacing).

        The same matrix :func:`~sono3d.io.read_volume` gives for the ``.mha`` PLUS writes with this
        configuration, so a sono3d reconstruction can be compared voxel by voxel. The grid starts at
        voxel ``(i0, j0, k0)`` of ``output_extent`` when given.
        """
        if self.output_spacing_mm is None or self.output_origin_mm is None:
            return None
        A = np.diag([*self.output_spacing_mm, 1.0])
        A[:3, 3] = self.output_origin_mm
        if self.output_extent is not None:
            A[:3, 3] += np.asarray(self.output_spacing_mm) * np.asarray(self.output_extent[0::2])
        return LPS_TO_RAS @ A

    def output_shape(self) -> tuple[int, int, int] | None:
        """Voxel counts of ``output_extent``, if given."""
        if self.output_extent is None:
            return None
        e = self.output_extent
        return e[1] - e[0] + 1, e[3] - e[2] + 1, e[5] - e[4] + 1


def _floats(text: str | None, n: int | None, path: Path, name: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise FileFormatError(f"{path}: PLUS config attribute {name}={text!r} is not numeric") from None
    if n is not None and len(values) != n:
        raise FileFormatError(f"{path}: PLUS config attribute {name} needs {n} numbers, got {len(values)}")
    return values


def read_plus_config(path: str | Path) -> PlusConfig:
    """Parse a PLUS configuration XML: calibration transforms and reconstruction settings.

    Raises
    ------
    FileFormatError
        Missing file, not XML, not a ``PlusConfiguration``, or a malformed matrix.
    """
    path = check_file(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise FileFormatError(f"{path}: not a valid PLUS configuration XML ({exc})") from None
    if root.tag != "PlusConfiguration":
        raise FileFormatError(f"{path}: not a PLUS configuration (root element is <{root.tag}>)")
    transforms: dict[tuple[str, str], np.ndarray] = {}
    for t in root.iter("Transform"):
        a, b, m = t.get("From"), t.get("To"), t.get("Matrix")
        if not (a and b and m):
            continue
        values = _floats(m, 16, path, f"Matrix of {a}To{b}")
        transforms[(a, b)] = np.asarray(values, dtype=np.float64).reshape(4, 4)
    rec_el = next(root.iter("VolumeReconstruction"), None)
    rec = dict(rec_el.attrib) if rec_el is not None else {}

    def get(*names: str) -> str | None:
        return next((rec[n] for n in names if n in rec), None)

    extent = _floats(get("OutputExtent"), 6, path, "OutputExtent")
    clip_o = _floats(get("ClipRectangleOrigin"), 2, path, "ClipRectangleOrigin")
    clip_s = _floats(get("ClipRectangleSize"), 2, path, "ClipRectangleSize")
    r0 = _floats(get("FanRadiusStartPixel"), 1, path, "FanRadiusStartPixel")
    r1 = _floats(get("FanRadiusStopPixel", "FanDepth"), 1, path, "FanRadiusStopPixel")
    return PlusConfig(
        path=path,
        transforms=transforms,
        image_frame=rec.get("ImageCoordinateFrame", "Image"),
        reference_frame=rec.get("ReferenceCoordinateFrame", "Reference"),
        output_spacing_mm=_floats(get("OutputSpacing"), 3, path, "OutputSpacing"),  # type: ignore[arg-type]
        output_origin_mm=_floats(get("OutputOrigin"), 3, path, "OutputOrigin"),  # type: ignore[arg-type]
        output_extent=None if extent is None else tuple(int(round(v)) for v in extent),  # type: ignore[arg-type]
        clip_origin_px=None if clip_o is None else tuple(int(round(v)) for v in clip_o),  # type: ignore[arg-type]
        clip_size_px=None if clip_s is None else tuple(int(round(v)) for v in clip_s),  # type: ignore[arg-type]
        fan_origin_px=_floats(get("FanOriginPixel", "FanOrigin"), 2, path, "FanOriginPixel"),  # type: ignore[arg-type]
        fan_angles_deg=_floats(get("FanAnglesDeg", "FanAngles"), 2, path, "FanAnglesDeg"),  # type: ignore[arg-type]
        fan_radius_px=None if r1 is None else ((r0 or (0.0,))[0], r1[0]),
        reconstruction=rec,
        hole_filling=tuple(dict(el.attrib) for el in root.iter("HoleFillingElement")),
    )


def find_plus_config(sequence_path: str | Path, transform_names: list[str]) -> PlusConfig | None:
    """The one PLUS configuration beside a sequence file whose transforms chain its frames.

    PLUS users keep ``PlusDeviceSet_*.xml`` next to their recordings. A configuration is only taken
    when its file name contains the recording's name (``SpinePhantomFreehand.igs.mha`` ->
    ``PlusDeviceSet_SpinePhantomFreehand*.xml``), so that another recording's calibration in the same
    folder is never applied silently; when exactly one such XML parses and links the image frame to
    the reference frame through the sequence's transforms, it is returned (``None`` otherwise).
    """
    stem = Path(sequence_path).name.split(".")[0].lower()
    found = []
    for xml in sorted(Path(sequence_path).parent.glob("*.xml")):
        if not stem or stem not in xml.name.lower():
            continue
        try:
            cfg = read_plus_config(xml)
        except (FileFormatError, OSError):
            continue
        edges = _edges(transform_names, cfg)
        if _path(edges, cfg.image_frame, cfg.reference_frame) is not None:
            found.append(cfg)
    return found[0] if len(found) == 1 else None


# --- transform chaining --------------------------------------------------------------------------

def _split_name(name: str) -> tuple[str, str] | None:
    m = _TRANSFORM.match(name)
    return (m.group(1), m.group(2)) if m else None


def _edges(transform_names: list[str], config: PlusConfig | None) -> dict[tuple[str, str], str]:
    """Directed edges ``(From, To) -> source`` where source is ``'config'`` or the field name."""
    edges: dict[tuple[str, str], str] = {}
    for name in transform_names:
        ft = _split_name(name)
        if ft:
            edges[ft] = name
    if config is not None:
        for ft in config.transforms:
            edges[ft] = "config"  # the configuration overrides a same-named recorded transform
    return edges


def _path(edges: dict[tuple[str, str], str], start: str, goal: str) -> list[tuple[str, str, bool]] | None:
    """Shortest chain of edges from ``start`` to ``goal``: ``[(From, To, inverted), ...]``."""
    if start == goal:
        return []
    prev: dict[str, tuple[str, tuple[str, str, bool]]] = {}
    seen = {start}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for a, b in edges:
            for here, nxt, inverted in ((a, b, False), (b, a, True)):
                if here != node or nxt in seen:
                    continue
                seen.add(nxt)
                prev[nxt] = (node, (a, b, inverted))
                queue.append(nxt)
    if goal not in prev:
        return None
    out = []
    node = goal
    while node != start:
        node, step = prev[node]
        out.append(step)
    return out[::-1]


def _chain(
    chain: list[tuple[str, str, bool]],
    edges: dict[tuple[str, str], str],
    recorded: dict[str, np.ndarray],
    valid: dict[str, np.ndarray],
    config: PlusConfig | None,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Compose the chain into ``(n, 4, 4)`` matrices and a per-frame validity mask."""
    M = np.broadcast_to(np.eye(4), (n, 4, 4)).copy()
    ok = np.ones(n, dtype=bool)
    for a, b, inverted in chain:
        src = edges[(a, b)]
        if src == "config":
            T = np.broadcast_to(config.transforms[(a, b)], (n, 4, 4))  # type: ignore[union-attr]
        else:
            T = recorded[src]
            ok &= valid[src]
        if inverted:
            T = _safe_inv(T)
        M = T @ M
    return M, ok


def _safe_inv(T: np.ndarray) -> np.ndarray:
    det = np.linalg.det(T[..., :3, :3])
    bad = ~np.isfinite(det) | (np.abs(det) < 1e-12)
    T = np.where(bad[..., None, None], np.eye(4), T)
    return np.linalg.inv(T)


# --- reading -------------------------------------------------------------------------------------

def frames_to_float(frames: np.ndarray, path: Path | str, bits_stored: int | None = None) -> np.ndarray:
    """Grey frames in [0, 1]: integers divided by their type's maximum, RGB averaged by luma.

    ``frames`` is ``(N, H, W)`` or ``(N, H, W, C)`` with ``C`` in 1..4 (alpha ignored); floats are kept
    as they are (sono3d writes float32 frames already in [0, 1]). The result is float32, or float16
    for a sweep of more than :data:`~sono3d.types.COMPACT_FRAME_PIXELS` pixels, converted a chunk of
    frames at a time so that no float32 copy of a large sweep is ever made.
    """
    a = np.asarray(frames)
    # Signed integers are shifted by their type's minimum when any pixel of the sweep is negative.
    # (RGB is first reduced to luma clipped at 0, so it never is.)
    rgb = a.ndim == 4 and a.shape[-1] in (3, 4)
    shift = bool(np.issubdtype(a.dtype, np.signedinteger) and not rgb and a.size and a.min() < 0)
    n_pixels = a.shape[0] * a.shape[1] * a.shape[2] if a.ndim >= 3 else a.size
    dtype = frame_dtype(n_pixels)
    if dtype == np.float32 or a.ndim not in (3, 4):
        return _frames_to_float32(a, path, bits_stored, shift)
    out = np.empty(a.shape[:3], dtype=dtype)
    for s in range(0, a.shape[0], 64):
        out[s:s + 64] = _frames_to_float32(a[s:s + 64], path, bits_stored, shift)
    return out


def _frames_to_float32(frames: np.ndarray, path: Path | str, bits_stored: int | None, shift: bool) -> np.ndarray:
    """:func:`frames_to_float` of some frames, as float32."""
    a = np.asarray(frames)
    if a.ndim == 4:
        c = a.shape[-1]
        if c == 1:
            a = a[..., 0]
        elif c in (3, 4):
            a = _luma(a[..., :3])
        else:
            raise FileFormatError(f"{path}: frames have {c} channels; expected grey or RGB")
    if a.ndim != 3:
        raise FileFormatError(f"{path}: frames have shape {a.shape}; expected [N, H, W]")
    if np.issubdtype(a.dtype, np.integer):
        if shift:
            a = a.astype(np.float64) - float(np.iinfo(a.dtype).min)
            top = float(np.iinfo(frames.dtype).max) - float(np.iinfo(frames.dtype).min)
        else:
            top = float(2 ** bits_stored - 1) if bits_stored else float(np.iinfo(a.dtype).max)
        return (a.astype(np.float32) / np.float32(top)).astype(np.float32)
    if a.dtype == bool:
        return a.astype(np.float32)
    return a.astype(np.float32, copy=False)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of RGB pixels (the Y of YBR), keeping the input's integer scale."""
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    if np.issubdtype(rgb.dtype, np.integer):
        return np.clip(np.rint(y), 0, np.iinfo(rgb.dtype).max).astype(rgb.dtype)
    return y


def _read_header_and_frames(path: Path) -> tuple[dict[str, str], np.ndarray, str]:
    """Global fields (lower-case keys kept as written), frames ``(N, H, W[, C])`` and the format."""
    if full_suffix(path).endswith(("mha", "mhd")):
        img = read_metaimage(path)
        a = img.array
        ndims = int(img.fields["NDims"])
        if ndims == 2:
            a = a[None]
        elif ndims == 4:  # W x H x 1 x N: one-slice 3D frames
            if a.shape[1] != 1:
                raise FileFormatError(f"{path}: frames are 3D ({a.shape[1]} slices); sono3d reads 2D sweeps")
            a = a[:, 0]
        elif ndims != 3:
            raise FileFormatError(f"{path}: a sequence needs 2D frames over time, got NDims = {ndims}")
        return img.fields, a, "metaimage"
    data, header = _read_nrrd(path)
    kinds = [str(k).lower() for k in header.get("kinds", [])] or ["domain"] * data.ndim
    if len(kinds) != data.ndim:
        raise FileFormatError(f"{path}: NRRD kinds do not match its {data.ndim} axes")
    # pynrrd gives file (Fortran) axis order, x first. Wanted: (N, H, W[, C]).
    lst = [i for i, k in enumerate(kinds) if k in ("list", "time")]
    dom = [i for i, k in enumerate(kinds) if k in ("domain", "space")]
    vec = [i for i in range(data.ndim) if i not in lst and i not in dom]
    flat = [i for i in dom[2:] if data.shape[i] == 1]  # the unit z axis of W x H x 1 x N
    dom = [i for i in dom if i not in flat]
    if len(lst) > 1 or len(vec) > 1 or len(dom) != 2:
        raise FileFormatError(f"{path}: NRRD with axes {kinds} and sizes {list(data.shape)} is not a sequence of 2D frames")
    a = np.transpose(data, lst + dom[::-1] + vec + flat)
    a = a.reshape(a.shape[: a.ndim - len(flat)])
    if not lst:
        a = a[None]
    fields = {str(k): (v if isinstance(v, str) else str(v)) for k, v in header.items()}
    return fields, a, "nrrd"


def _frame_fields(fields: dict[str, str]) -> dict[int, dict[str, str]]:
    per: dict[int, dict[str, str]] = {}
    for key, value in fields.items():
        m = _FRAME_FIELD.match(key)
        if m:
            per.setdefault(int(m.group(1)), {})[m.group(2)] = value.strip()
    return per


def _field(fields: dict[str, str], *names: str) -> str | None:
    low = {k.lower(): v for k, v in fields.items()}
    return next((low[n.lower()].strip() for n in names if n.lower() in low), None)


def _recorded_transforms(per: dict[int, dict[str, str]], n: int, path: Path
                         ) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Names of the per-frame ``...Transform`` fields, their ``(n, 4, 4)`` matrices and validity.

    A frame's transform is valid when finite and its ``...TransformStatus`` is ``OK`` (or
    absent); a tracker that lost a frame says so with the status ``INVALID``, so a transform
    recorded for some frames but not for others, or for a frame the file does not hold, is a
    mismatch of poses and frames and refused (PLUS records every transform for every frame).
    """
    names = sorted({k for d in per.values() for k in d if k.endswith("Transform")})
    beyond = sorted(i for i in per if i >= n and any(k in names for k in per[i]))
    if beyond:
        raise FileFormatError(f"{path}: poses do not match frames: the file holds {n} frames (0-{n - 1}) but "
                              f"records a transform for frame {beyond[0]}")
    for name in names:
        lacking = [i for i in range(n) if name not in per.get(i, {})]
        if lacking:
            raise FileFormatError(f"{path}: poses do not match frames: {name} is recorded for {n - len(lacking)} "
                                  f"of the {n} frames (not for frame {lacking[0]}); expected one per frame, "
                                  f"with {name}Status = INVALID where tracking was lost")
    recorded: dict[str, np.ndarray] = {}
    valid: dict[str, np.ndarray] = {}
    for name in names:
        mats = np.tile(np.eye(4), (n, 1, 1))
        ok = np.zeros(n, dtype=bool)
        for i in range(n):
            text = per[i][name]
            try:
                vals = np.array([float(v) for v in text.split()], dtype=np.float64)
            except ValueError:
                raise FileFormatError(f"{path}: frame {i} field {name} is not numeric") from None
            if vals.size != 16:
                raise FileFormatError(f"{path}: frame {i} field {name} has {vals.size} numbers, not 16")
            mats[i] = vals.reshape(4, 4)
            ok[i] = per[i].get(name + "Status", "OK").upper() == "OK" and bool(np.all(np.isfinite(vals)))
        recorded[name] = mats
        valid[name] = ok
    return names, recorded, valid


def read_sequence(
    path: str | Path,
    plus_config: str | Path | PlusConfig | None = None,
    spacing_mm: tuple[float, float] | None = None,
) -> Sweep:
    """Read a PLUS / Slicer sequence file (``.igs.mha``, ``.seq.mha``, ``.seq.nrrd``, ...) as a Sweep.

    Parameters
    ----------
    path : str or Path
    plus_config : str, Path, PlusConfig or None
        PLUS configuration whose calibration and frame names chain the recorded transforms to
        ``ImageToReference``. When ``None`` the file's own ``ImageToReferenceTransform`` is used if
        present, else a single PLUS configuration XML beside the file that chains the transforms.
    spacing_mm : (dy, dx) or None
        Pixel spacing to use when neither the file nor the calibration gives one.

    Returns
    -------
    Sweep
        ``frames`` ``(N, H, W)`` float32 in [0, 1] oriented ``MF``; ``image_to_world`` ``(N, 4, 4)``
        RAS mm or ``None`` when the transforms cannot be chained. Frames whose image or transform
        status is not ``OK`` are dropped (``meta['dropped_frames']``).
    """
    path = Path(path)
    fields, raw, fmt = _read_header_and_frames(path)
    per = _frame_fields(fields)
    n = raw.shape[0]
    if n == 0:
        raise FileFormatError(f"{path}: sequence has no frames")
    # Orientation: flip to MF as PLUS does on load; transforms already refer to the MF image.
    # Flipped before conversion (views of the raw data), so a large sweep is copied only once.
    orient = (_field(fields, "UltrasoundImageOrientation", "ultrasound image orientation") or "MF").upper()[:2]
    if orient in _ORIENTATIONS:
        if orient[1] == "N":
            raw = raw[:, ::-1, :]
        if orient[0] == "U":
            raw = raw[:, :, ::-1]
    frames = np.ascontiguousarray(frames_to_float(raw, path))
    del raw

    names, recorded, valid = _recorded_transforms(per, n, path)
    image_ok = np.array([per.get(i, {}).get("ImageStatus", "OK").upper() == "OK" for i in range(n)])

    meta: dict[str, Any] = {"source": str(path), "format": f"plus-sequence ({fmt})",
                            "n_frames_in_file": n, "transforms": names,
                            "orientation_in_file": orient}
    own = _field(fields, "sono3d_meta")
    if own:
        try:
            meta = {**json.loads(own), **meta}
        except ValueError:
            raise FileFormatError(f"{path}: sono3d_meta field is not valid JSON") from None
        meta["format"] = f"sono3d sequence ({fmt})"

    # Poses.
    config = plus_config
    if config is not None and not isinstance(config, PlusConfig):
        config = read_plus_config(config)
    image_to_ref = None
    pose_ok = np.ones(n, dtype=bool)
    if config is None and "ImageToReferenceTransform" in recorded:
        image_to_ref, pose_ok = recorded["ImageToReferenceTransform"], valid["ImageToReferenceTransform"]
    else:
        if config is None and not own:  # sono3d's own files say all there is to say
            config = find_plus_config(path, names)
            if config is not None:
                meta["plus_config_found_beside"] = True
        start = config.image_frame if config else "Image"
        goal = config.reference_frame if config else "Reference"
        edges = _edges(names, config)
        chain = _path(edges, start, goal)
        if chain is None and isinstance(plus_config, (str, Path, PlusConfig)):
            cfg_names = ", ".join(f"{a}To{b}" for a, b in config.transforms) or "none"  # type: ignore[union-attr]
            rec_names = ", ".join(n_[: -len("Transform")] for n_ in names) or "none"
            raise InputError(
                f"{path}: cannot chain {start} to {goal} with PLUS config {config.path}: "  # type: ignore[union-attr]
                f"the sequence records {rec_names} and the config defines {cfg_names}"
            )
        if chain is not None:
            image_to_ref, pose_ok = _chain(chain, edges, recorded, valid, config, n)
            meta["pose_chain"] = [f"inv({a}To{b})" if inv else f"{a}To{b}" for a, b, inv in chain]
        if config is not None:
            meta["plus_config"] = str(config.path)

    keep = image_ok & (pose_ok if image_to_ref is not None else True)
    if not np.any(keep):
        raise InputError(f"{path}: no frame has a valid image and pose (all statuses are INVALID)")
    dropped = np.flatnonzero(~keep)
    if dropped.size:
        meta["dropped_frames"] = [int(i) for i in dropped]

    # Frame times.
    times = None
    stamps = [per.get(i, {}).get("Timestamp") for i in range(n)]
    if all(s is not None for s in stamps) and _field(fields, "sono3d_frame_times") != "none":
        try:
            times = np.array([float(s) for s in stamps], dtype=np.float64)  # type: ignore[arg-type]
        except ValueError:
            raise FileFormatError(f"{path}: frame Timestamp fields are not numeric") from None
    if times is not None:
        meta["frame_times_s"] = [float(t) for t in times[keep]]

    # Spacing.
    spacing_field = _field(fields, "sono3d_spacing_mm")
    image_to_world = None
    if image_to_ref is not None:
        image_to_world = LPS_TO_RAS @ image_to_ref[keep]
        if spacing_field is None:  # PLUS data: the third column is scaled too; make it the unit normal
            normal = np.cross(image_to_world[:, :3, 0], image_to_world[:, :3, 1])
            image_to_world[:, :3, 2] = normal / np.linalg.norm(normal, axis=-1, keepdims=True)
    if spacing_field is not None:
        sp = _numbers(spacing_field, 2, path, "sono3d_spacing_mm")
        meta["spacing_source"] = "file"
    elif image_to_world is not None:
        s = np.linalg.norm(image_to_world[0, :3, :2], axis=0)
        sp = (float(s[1]), float(s[0]))
        meta["spacing_source"] = "calibration"
        R = image_to_world[0, :3, :2] / s
        meta["calibration_shear_deg"] = float(abs(90.0 - np.degrees(np.arccos(np.clip(R[:, 0] @ R[:, 1], -1, 1)))))
    elif spacing_mm is not None:
        sp = (float(spacing_mm[0]), float(spacing_mm[1]))
        meta["spacing_source"] = "option"
    else:
        es = _field(fields, "ElementSpacing")
        sp = (1.0, 1.0)
        if es:
            v = _numbers(es, None, path, "ElementSpacing")
            sp = (v[1], v[0]) if len(v) >= 2 else sp
        meta["spacing_source"] = "assumed"
        meta["spacing_note"] = "no calibration: pixel spacing taken from the header (PLUS writes 1 1 1)"

    sector = None
    sector_field = _field(fields, "sono3d_sector")
    if sector_field and sector_field != "none":
        try:
            sector = Sector.from_dict(json.loads(sector_field))
        except (ValueError, KeyError, TypeError) as exc:
            raise FileFormatError(f"{path}: sono3d_sector field is invalid ({exc})") from None

    return Sweep(frames=frames if keep.all() else frames[keep], image_to_world=image_to_world, spacing_mm=sp,
                 sector=sector, meta=meta)


def _numbers(text: str, n: int | None, path: Path, name: str) -> tuple[float, ...]:
    try:
        v = tuple(float(x) for x in text.split())
    except ValueError:
        raise FileFormatError(f"{path}: field {name} is not numeric: {text[:60]!r}") from None
    if n is not None and len(v) != n:
        raise FileFormatError(f"{path}: field {name} needs {n} numbers, got {len(v)}")
    return v


# --- writing -------------------------------------------------------------------------------------

_META_SKIP = {"source", "format", "frame_times_s", "n_frames_in_file", "transforms", "orientation_in_file",
              "spacing_source", "spacing_note", "plus_config", "pose_chain", "dropped_frames",
              "plus_config_found_beside", "calibration_shear_deg"}


def _json_meta(meta: dict[str, Any]) -> str:
    """The JSON-serialisable part of ``meta`` (what cannot be stored is left out)."""
    out = {}
    for k, v in meta.items():
        if k in _META_SKIP:
            continue
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return json.dumps(out, separators=(",", ":"))


def _sequence_fields(sweep: Sweep) -> tuple[dict[str, str], dict[str, str]]:
    """Global ``sono3d_*`` fields and per-frame PLUS fields of a sweep."""
    n = sweep.n_frames
    times = sweep.meta.get("frame_times_s")
    if times is not None and len(times) != n:
        raise InputError(f"sweep has {n} frames but {len(times)} frame times")
    glob = {
        "sono3d_spacing_mm": format_numbers(sweep.spacing_mm),
        "sono3d_sector": json.dumps(sweep.sector.to_dict(), separators=(",", ":")) if sweep.sector else "none",
        "sono3d_frame_times": "timestamps" if times is not None else "none",
        "sono3d_meta": _json_meta(sweep.meta),
    }
    per: dict[str, str] = {}
    ref = None if sweep.image_to_world is None else LPS_TO_RAS @ sweep.image_to_world
    for i in range(n):
        p = f"Seq_Frame{i:04d}_"
        if ref is not None:
            per[p + "ImageToReferenceTransform"] = format_numbers(ref[i])
            per[p + "ImageToReferenceTransformStatus"] = "OK"
        per[p + "Timestamp"] = format_numbers([times[i] if times is not None else float(i)])
        per[p + "ImageStatus"] = "OK"
    return glob, per


def write_seq_nrrd(path: str | Path, sweep: Sweep) -> Path:
    """Write a sweep as a PLUS/Slicer sequence NRRD (float32 frames, bit-exact round trip).

    Layout ``W x H x 1 x N`` (kinds ``domain domain domain list``), pixel-unit space directions
    as PLUS writes them (the physical scale lives in each frame's ``ImageToReferenceTransform``),
    ``axis 3 index values`` with the frame times so Slicer's sequence browser shows them.
    """
    import nrrd

    glob, per = _sequence_fields(sweep)
    n = sweep.n_frames
    times = sweep.meta.get("frame_times_s")
    index = [float(t) for t in times] if times is not None else list(range(n))
    header: dict[str, Any] = {
        "type": "float",
        "space": "left-posterior-superior",
        "kinds": ["domain", "domain", "domain", "list"],
        "space directions": np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [np.nan] * 3]),
        "space origin": np.zeros(3),
        "encoding": "gzip",
        "axis 3 index type": "numeric",
        "axis 3 index values": " ".join(repr(float(v)) for v in index),
        "DataNodeClassName": "vtkMRMLScalarVolumeNode",
        "ultrasound image orientation": "MF",
        "ultrasound image type": "BRIGHTNESS",
        **glob,
        **per,
    }
    data = np.ascontiguousarray(sweep.frames[:, None, :, :], dtype=np.float32)  # (N, 1, H, W)
    with atomic_path(path) as tmp:
        nrrd.write(str(tmp), data, header, index_order="C")
    return Path(path)


def write_seq_mha(path: str | Path, sweep: Sweep, compress: bool = True) -> Path:
    """Write a sweep as a PLUS sequence metafile (``.igs.mha``), float32 frames, bit-exact."""
    glob, per = _sequence_fields(sweep)
    fields = {
        "AnatomicalOrientation": "RAI",
        "CenterOfRotation": "0 0 0",
        "ElementSpacing": "1 1 1",
        "Offset": "0 0 0",
        "TransformMatrix": "1 0 0 0 1 0 0 0 1",
        "Kinds": "domain domain list",
        "UltrasoundImageOrientation": "MFA",
        "UltrasoundImageType": "BRIGHTNESS",
        **glob,
        **per,
    }
    return write_metaimage(path, np.ascontiguousarray(sweep.frames, dtype=np.float32), fields, compress=compress)
