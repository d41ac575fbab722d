"""Volumes: NIfTI (nibabel), MetaImage and NRRD, all returned as a RAS :class:`~sono3d.types.Volume`.

MetaImage and NRRD store LPS coordinates (ITK's convention): the reader multiplies the affine on
the left by ``diag(-1, -1, 1, 1)`` and the writer does the same on the way out, so a volume written
by sono3d opens in the same place in 3D Slicer (see ``docs/conventions.md``).

Round trips are bit-exact: NIfTI stores its affine as float32 (sform), MetaImage splits it into
direction and spacing, so our writers also keep the float64 affine in a header extension / field
that our reader prefers when it agrees with the standard fields.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sono3d.errors import FileFormatError
from sono3d.io.atomic import atomic_path
from sono3d.io.metaimage import format_numbers, read_metaimage, write_metaimage
from sono3d.io.registry import check_claimed_size, reason
from sono3d.types import Volume

__all__ = ["LPS_TO_RAS", "read_nifti", "write_nifti", "read_metaimage_volume",
           "write_metaimage_volume", "read_nrrd_volume", "write_nrrd_volume"]

#: Flip between ITK's LPS and the RAS world (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_AFFINE_FIELD = "Sono3dAffineRAS"
_NIFTI_TAG = "sono3d:affine_ras="


def _exact_affine(stored: str | None, approx: np.ndarray) -> np.ndarray:
    """The float64 affine we wrote ourselves, when present and consistent with the standard fields."""
    if stored:
        try:
            exact = np.array([float(v) for v in stored.split()], dtype=np.float64).reshape(4, 4)
        except ValueError:
            return approx
        if np.allclose(exact, approx, rtol=1e-5, atol=1e-4):
            return exact
    return approx


def _as_3d(array: np.ndarray, path: Path) -> np.ndarray:
    a = np.asarray(array)
    while a.ndim > 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise FileFormatError(f"{path}: not a 3D volume (array shape {a.shape})")
    return a


def _storable(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array)
    return a.astype(np.uint8) if a.dtype == bool else a


# --- NIfTI ---------------------------------------------------------------------------------------

def read_nifti(path: str | Path) -> Volume:
    import nibabel as nib

    path = Path(path)
    _check_nifti_header(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise FileFormatError(f"{path}: cannot read NIfTI ({reason(exc)})") from None
    stored = None
    for ext in img.header.extensions:
        content = ext.get_content()
        text = content.decode("latin-1", "replace") if isinstance(content, bytes) else str(content)
        if text.startswith(_NIFTI_TAG):
            stored = text[len(_NIFTI_TAG):]
    affine = _exact_affine(stored, np.asarray(img.affine, dtype=np.float64))
    return Volume(array=_as_3d(data, path), affine=affine, meta={"source": str(path), "format": "nifti"})


def _check_nifti_header(path: Path) -> None:
    """Refuse, from the raw header, voxel sizes that are not positive (nibabel would quietly make
    them 1) and sizes the file cannot hold (nibabel would allocate them first)."""
    import gzip

    import nibabel as nib

    compressed = path.name.lower().endswith(".gz")
    try:
        with (gzip.open if compressed else open)(path, "rb") as fh:
            raw = fh.read(540)
        little = int.from_bytes(raw[:4], "little") in (348, 540)  # sizeof_hdr tells the byte order
        header_class = nib.Nifti2Header if int.from_bytes(raw[:4], "little" if little else "big") == 540 \
            else nib.Nifti1Header
        size = header_class.template_dtype.itemsize  # the header struct alone; extensions follow it
        header = header_class(raw[:size], endianness="<" if little else ">", check=False)
        shape, dtype = header.get_data_shape(), header.get_data_dtype()
        pixdim, offset, sform = header["pixdim"], int(header["vox_offset"]), int(header["sform_code"])
    except Exception:  # noqa: BLE001 - nibabel says what is wrong when it loads the file
        return
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    check_claimed_size(path, claimed, path.stat().st_size - (0 if compressed else offset), compressed,
                       f"voxels ({' x '.join(map(str, shape))} {dtype})")
    spatial = [float(v) for v in pixdim[1:1 + min(len(shape), 3)]]
    if sform == 0 and not all(v > 0 for v in spatial):  # without an sform the voxel size is pixdim
        raise FileFormatError(f"{path}: NIfTI voxel size (pixdim) must be positive mm, got "
                              f"{format_numbers(spatial)}")


def write_nifti(path: str | Path, volume: Volume) -> Path:
    import nibabel as nib

    array = _storable(volume.array)
    img = nib.Nifti1Image(array, volume.affine, dtype=array.dtype)
    img.header.extensions.append(
        nib.nifti1.Nifti1Extension(6, (_NIFTI_TAG + format_numbers(volume.affine)).encode("latin-1"))
    )
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


# --- MetaImage -----------------------------------------------------------------------------------

def read_metaimage_volume(path: str | Path) -> Volume:
    img = read_metaimage(path)
    return _metaimage_to_volume(img)


def _metaimage_to_volume(img) -> Volume:  # noqa: ANN001 - MetaImage
    path = img.path
    a = img.array
    if a.ndim == 4 or (a.ndim == 3 and "ElementNumberOfChannels" in img.fields
                       and int(img.fields["ElementNumberOfChannels"]) > 1):
        a = a[..., 0]  # a multi-channel image keeps its first channel
    a = _as_3d(a[None] if a.ndim == 2 else a, path)  # (z, y, x)
    ndims = int(img.fields["NDims"])
    spacing = img.numbers("ElementSpacing", [1.0] * ndims)
    offset = img.numbers("Offset", img.numbers("Position", img.numbers("Origin", [0.0] * ndims)))
    tm = img.numbers("TransformMatrix", img.numbers("Rotation", img.numbers("Orientation", list(np.eye(ndims).ravel()))))
    if len(spacing) != ndims or len(offset) != ndims or len(tm) != ndims * ndims:
        raise FileFormatError(f"{path}: MetaImage spacing/offset/transform do not match NDims = {ndims}")
    if not all(v > 0 for v in spacing):  # the direction matrix carries the orientation, not the spacing
        raise FileFormatError(f"{path}: MetaImage ElementSpacing must be positive mm, got {format_numbers(spacing)}")
    # TransformMatrix row i is the direction of axis i (ITK's MetaImageIO convention).
    direction = np.eye(3)
    direction[:ndims, :ndims] = np.asarray(tm).reshape(ndims, ndims).T
    sp = np.ones(3)
    sp[:ndims] = spacing
    org = np.zeros(3)
    org[:ndims] = offset
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(sp)
    lps[:3, 3] = org
    affine = _exact_affine(img.fields.get(_AFFINE_FIELD), LPS_TO_RAS @ lps)
    array = np.ascontiguousarray(a.transpose(2, 1, 0))  # (z, y, x) -> [i, j, k]
    return Volume(array=array, affine=affine, meta={"source": str(path), "format": "metaimage"})


def write_metaimage_volume(path: str | Path, volume: Volume, compress: bool = True) -> Path:
    lps = LPS_TO_RAS @ volume.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    fields = {
        "TransformMatrix": format_numbers(direction.T),
        "Offset": format_numbers(lps[:3, 3]),
        "CenterOfRotation": "0 0 0",
        "ElementSpacing": format_numbers(spacing),
        _AFFINE_FIELD: format_numbers(volume.affine),
    }
    data = np.ascontiguousarray(_storable(volume.array).transpose(2, 1, 0))
    return write_metaimage(path, data, fields, compress=compress)


# --- NRRD ----------------------------------------------------------------------------------------

_LPS_SPACES = {"left-posterior-superior", "lps", "3d-left-handed"}
_RAS_SPACES = {"right-anterior-superior", "ras", "3d-right-handed", "scanner-xyz"}


def read_nrrd_volume(path: str | Path) -> Volume:
    path = Path(path)
    data, header = _read_nrrd(path)
    kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * data.ndim)]
    # Drop non-spatial axes of size one; a vector axis (RGB) keeps its first component.
    keep = [i for i, k in enumerate(kinds) if k in ("domain", "space")]
    for i in sorted(set(range(data.ndim)) - set(keep), reverse=True):
        data = np.take(data, 0, axis=i)
    affine = _nrrd_affine(header, len(keep), path)
    return Volume(array=_as_3d(data, path), affine=affine, meta={"source": str(path), "format": "nrrd"})


def _read_nrrd(path: Path) -> tuple[np.ndarray, dict]:
    import nrrd

    try:
        _check_nrrd_header(path)
        data, header = nrrd.read(str(path))
    except FileFormatError:
        raise
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, OSError, zlib errors...
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise FileFormatError(f"{path}: cannot read NRRD ({reason(exc)})") from None
    return data, header


def _check_nrrd_header(path: Path) -> None:
    """Refuse sizes the file cannot hold (before pynrrd allocates them) and spacings that are not
    positive (a flip belongs in the space directions)."""
    import nrrd

    with open(path, "rb") as fh:
        header = nrrd.read_header(fh)
        data_start = fh.tell()
    sizes = [int(v) for v in header.get("sizes", [])]
    encoding = str(header.get("encoding", "raw")).lower()
    if sizes and "data file" not in header and "datafile" not in header and encoding in ("raw", "gzip", "gz"):
        # one byte per value: a lower bound whatever the type, enough to refuse a claim of terabytes
        check_claimed_size(path, int(np.prod(sizes, dtype=object)), path.stat().st_size - data_start,
                           encoding != "raw", f"voxels ({' x '.join(map(str, sizes))})")
    spacings = [float(v) for v in header.get("spacings", []) if np.isfinite(float(v))]
    if not all(v > 0 for v in spacings):
        raise FileFormatError(f"{path}: NRRD spacings must be positive mm, got {format_numbers(spacings)}")


def _nrrd_affine(header: dict, n_spatial: int, path: Path) -> np.ndarray:
    space = str(header.get("space", "")).lower()
    A = np.eye(4)
    dirs = header.get("space directions")
    if dirs is not None:
        rows = [np.asarray(d, dtype=np.float64) for d in dirs if d is not None and np.all(np.isfinite(np.asarray(d, dtype=float)))]
        if len(rows) != n_spatial or any(r.shape != rows[0].shape for r in rows):
            raise FileFormatError(f"{path}: NRRD space directions do not match its {n_spatial} spatial axes")
        D = np.stack(rows, axis=1)  # column i = step of axis i
        A[: D.shape[0], :n_spatial] = D
        origin = header.get("space origin")
        if origin is not None:
            o = np.asarray(origin, dtype=np.float64)
            A[: o.shape[0], 3] = o
    elif header.get("spacings") is not None:
        sp = [float(s) for s in header["spacings"] if np.isfinite(float(s))]
        A[:len(sp), :len(sp)] = np.diag(sp)
    if n_spatial < 3:
        A[2, 2] = 1.0
    if space in _LPS_SPACES or (space == "" and dirs is not None):
        A = LPS_TO_RAS @ A
    elif space and space not in _RAS_SPACES:
        raise FileFormatError(f"{path}: unsupported NRRD space '{space}'")
    return _exact_affine(header.get(_AFFINE_FIELD), A)


def write_nrrd_volume(path: str | Path, volume: Volume) -> Path:
    import nrrd

    lps = LPS_TO_RAS @ volume.affine
    header = {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T.copy(),
        "space origin": lps[:3, 3].copy(),
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
        _AFFINE_FIELD: format_numbers(volume.affine),
    }
    with atomic_path(path) as tmp:
        nrrd.write(str(tmp), np.asarray(_storable(volume.array)), header, index_order="F")
    return Path(path)

