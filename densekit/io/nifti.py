"""NIfTI volumes (``.nii`` and ``.nii.gz``) through nibabel.

Arrays are returned in the file's voxel order (i, j, k[, t]) exactly as nibabel stores them; the 4x4
``affine`` maps voxel indices (i, j, k, 1) to scanner millimetres (RAS+). Reorienting or transposing is
the caller's business (``densekit.data.readers.volume`` transposes to (D, H, W) = (k, j, i)).

Data type: integer data stored without intensity scaling (slope 1, intercept 0, the norm for label maps)
comes back in its integer dtype; everything else (float data, or scaled integers such as most MRI
intensities) comes back as float32 with the header's scaling applied.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _check_suffix(path: Path) -> None:
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise ValueError(f"{path}: expected a NIfTI file ending in .nii or .nii.gz, got {path.name!r}")


def read_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(array, affine (4, 4) float64) of a NIfTI file; the array is read in full here (not lazily), so a
    truncated or corrupt file fails in this call with a ``ValueError`` naming the file."""
    path = Path(path)
    _check_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: NIfTI file not found")
    try:
        img = nib.load(str(path))
        proxy = img.dataobj
        slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
        raw_int = np.issubdtype(img.get_data_dtype(), np.integer)
        if raw_int and slope in (1.0, None) and inter in (0.0, None):
            array = np.asarray(proxy)  # unscaled integers (label maps): keep the integer dtype
            if not np.issubdtype(array.dtype, np.integer):  # nibabel scaled after all: float result
                array = array.astype(np.float32)
        else:
            array = np.asarray(img.get_fdata(dtype=np.float32))
        affine = np.asarray(img.affine, np.float64)
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError) as exc:
        raise ValueError(f"{path}: unreadable NIfTI file ({type(exc).__name__}: {exc})") from None
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError(f"{path}: expected a finite 4x4 affine in the header, got {affine.tolist()}")
    return array, affine


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write ``array`` (voxel order i, j, k[, t]) with ``affine`` (4, 4; None = identity, 1 mm voxels).

    bool is stored as uint8 and int64 as int32 (NIfTI readers commonly reject 64-bit integers); float64
    is kept. The suffix picks compression (``.nii.gz``). Returns the path.
    """
    path = Path(path)
    _check_suffix(path)
    array = np.asarray(array)
    if array.ndim < 3:
        raise ValueError(f"{path}: expected an array with at least 3 dims (i, j, k), got shape {array.shape}")
    affine = np.eye(4) if affine is None else np.asarray(affine, np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"{path}: affine must be 4x4, got shape {affine.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.int64 or array.dtype == np.uint64:
        info = np.iinfo(np.int32)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ValueError(f"{path}: int64 values outside the int32 range cannot be stored")
        array = array.astype(np.int32)
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path
