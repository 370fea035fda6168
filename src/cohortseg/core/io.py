"""Reading and writing files: NIfTI volumes, JSON and TSV, always through atomic writes."""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from isal import igzip

from cohortseg.core.errors import InvalidInputError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` once the block succeeds.

    The file appears under its final name only when complete: it is fsynced, then renamed
    (atomic on POSIX within one directory). On error the temporary file is removed; temporary
    files left by an earlier, killed writer of the same file are removed first.

    Parameters
    ----------
    path
        The final file name.
    suffix
        Suffix of the temporary file (defaults to the final name's suffixes, so that libraries
        choosing a format by extension, such as nibabel, still do the right thing).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(final.suffixes) or ".tmp"
    # one writer per output (Snakemake's guarantee): temporaries of a killed earlier writer of
    # this same file are stale, and go
    for stale in final.parent.glob(f".{glob.escape(final.name)}.*"):
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def write_tsv(
    path: str | os.PathLike[str], rows: Sequence[dict[str, Any]], columns: Sequence[str]
) -> None:
    """Write ``rows`` (dicts) as a tab-separated table with a header, atomically.

    Floats are written with 6 significant digits; missing values as empty cells.
    """

    def fmt(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float | np.floating):
            return "nan" if not np.isfinite(value) else f"{float(value):.6g}"
        return str(value)

    with atomic_write(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([fmt(row.get(col)) for col in columns])


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(
    path: str | os.PathLike[str],
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    file_column: str,
) -> None:
    """Write ``rows`` as a TSV manifest of files: ``columns`` plus ``sha256``, the SHA-256 of
    the file that each row names in ``file_column``."""
    hashed = [{**row, "sha256": sha256_file(row[file_column])} for row in rows]
    write_tsv(path, hashed, [*columns, "sha256"])


def read_tsv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read a tab-separated table with a header into a list of dicts of strings."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _read_nifti(path: Path) -> nib.Nifti1Image:
    """A NIfTI image; ``.gz`` files are decompressed with ISA-L's gzip (about 2.5 times as fast
    as zlib, the same bytes, the CRC checked) and parsed from memory."""
    if path.suffix != ".gz":
        return nib.load(str(path))
    return nib.Nifti1Image.from_bytes(igzip.decompress(path.read_bytes()))


def load_nifti(
    path: str | os.PathLike[str], subject: str = "?", dtype: type | None = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Load a 3D NIfTI volume.

    Returns
    -------
    data
        Array of shape (X, Y, Z) in the file's voxel order, cast to ``dtype``.
    affine
        (4, 4) voxel-to-world (scanner RAS, mm) matrix, float64.

    Raises
    ------
    InvalidInputError
        If the file is missing, unreadable or not a 3D volume.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(subject, str(path), "file does not exist")
    try:
        img = _read_nifti(path)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel and the gzip decoder raise many types for broken files
        raise InvalidInputError(subject, str(path), f"cannot read NIfTI: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidInputError(subject, str(path), f"expected a 3D volume, got shape {data.shape}")
    return np.asarray(data, dtype=dtype), np.asarray(img.affine, dtype=np.float64)


def save_nifti(
    path: str | os.PathLike[str], data: np.ndarray, affine: np.ndarray, dtype: type | None = None
) -> None:
    """Save a volume as NIfTI atomically, with a clean header (no free-text fields).

    Parameters
    ----------
    path
        Destination, ``.nii`` or ``.nii.gz``.
    data
        (X, Y, Z) array.
    affine
        (4, 4) voxel-to-world matrix in mm; written as both qform and sform.
    dtype
        On-disk data type (defaults to ``data.dtype``).
    """
    data = np.asarray(data if dtype is None else data.astype(dtype, copy=False))
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_write(path) as tmp:
        if tmp.suffix == ".gz":
            # ISA-L at level 1: about 6 times as fast as zlib's, smaller here, an ordinary gzip
            # stream without file name and with mtime 0 (so equal volumes give equal bytes)
            tmp.write_bytes(igzip.compress(img.to_bytes(), compresslevel=1, mtime=0))
        else:
            nib.save(img, str(tmp))


def parse_number(cell: object, missing: float | None = None) -> float | None:
    """A table cell (a TSV string such as ``"1.5"`` or ``"nan"``, or a number) as a float;
    ``missing`` where it holds no number (empty, ``None``, text)."""
    try:
        return float(cell)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return missing


def copy_atomically(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` so that ``dst`` appears only once complete."""
    with atomic_write(dst) as tmp:
        shutil.copyfile(src, tmp)
