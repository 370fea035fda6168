"""Every kind of NIfTI file nibabel reads, through validation and the host paths of inference,
preprocessing and evaluation: each data type in both byte orders, intensity scaling (and the
slopes that mean none), qform-only, sform-only, neither and disagreeing headers, NIfTI-2; and
the kinds that are refused (RGB, complex, zero, negative or NaN voxel sizes, float128), named
with subject and file at every stage.

A file's expected affine is built here from what the test wrote and the rules of nibabel and
the NIfTI standard (sform if sform_code > 0, else qform if qform_code > 0, else pixdim only),
not read back through nibabel; expected intensities are computed in float64 from the raw
values and the float32 scale factors the header holds.
"""

from __future__ import annotations

import gzip
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import InvalidInputError
from cohortseg.core.geometry import undo_reorient
from cohortseg.core.io import load_nifti, save_nifti
from cohortseg.evaluation.metrics import evaluate_subject
from cohortseg.inference.shard import ShardItem, read_volume, segment_items
from cohortseg.inputs.validate import validate_subject
from cohortseg.networks.build import build_network
from cohortseg.preprocessing.prepare import device_intensities, prepare_image, prepare_subject
from tests.conftest import default_config, make_small_plan

# MONAI warns about the classes a random label map leaves empty
pytestmark = pytest.mark.filterwarnings("ignore:the (prediction|ground truth) of class")

SHAPE = (9, 8, 7)
ZOOMS = (2.0, 2.5, 3.0)
CLASSES = ["organ", "shell", "tube"]
TOLERANCE_MM = 1.0
# Affines are stored as float32 (srow, quaternion, offsets): 2^-24 relative of entries up to
# 60 mm is 4e-6 mm; the quaternion's rotation is float32-exact to a few 1e-7 of the extent
# (under 30 mm), so 1e-4 mm is a bound with margin, far below any voxel.
AFFINE_ATOL_MM = 1e-4


def oblique(left_handed: bool = False) -> np.ndarray:
    """Voxel axes permuted and flipped against RAS, rotated 10 degrees about z, shifted."""
    c, s = math.cos(math.radians(10)), math.sin(math.radians(10))
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    axes = np.array([[0, 0, -1], [-1, 0, 0], [0, 1, 0]], float)  # voxel i → -y, j → z, k → -x
    affine = np.eye(4)
    affine[:3, :3] = rotation @ axes @ np.diag(ZOOMS)
    if left_handed:
        affine[:3, 2] *= -1
    affine[:3, 3] = [40.0, -12.5, 60.0]
    return affine


def pixdim_only() -> np.ndarray:
    """nibabel's (and ANALYZE's) affine from voxel sizes alone: x flipped, the volume centred."""
    affine = np.diag([-ZOOMS[0], ZOOMS[1], ZOOMS[2], 1.0])
    affine[:3, 3] = -((np.array(SHAPE) - 1) / 2) * np.diag(affine)[:3]
    return affine


@dataclass(frozen=True)
class Kind:
    """How one file is written.

    ``forms``: which of sform and qform hold the affine (``both``; ``sform``; ``qform``;
    ``qform-left`` a left-handed qform, qfac -1; ``neither``; ``disagree``, the qform 5 mm off
    the sform; ``bad-sform-code``, a qform and an sform with code 9, which nibabel ignores).
    ``datatype`` and ``pixdim`` overwrite the header's (refused kinds); ``refused`` is what
    every stage names then; ``note`` what validation logs about the affine.
    """

    name: str
    dtype: str = "<i2"
    suffix: str = ".nii.gz"
    slope: float = 1.0
    inter: float = 0.0
    forms: str = "both"
    version: int = 1
    four_d: bool = False
    datatype: int | None = None
    pixdim: tuple[float, float, float] | None = None
    refused: str | None = None
    note: str | None = None

    @property
    def scales(self) -> bool:
        """Whether the header scales intensities (a slope of 0, NaN or inf means no scaling)."""
        return bool(np.isfinite(np.float32(self.slope)) and np.float32(self.slope) != 0)

    def affine(self) -> np.ndarray:
        """The affine the standard and nibabel give the file."""
        if self.forms == "neither":
            return pixdim_only()
        return oblique(left_handed=self.forms == "qform-left")


DTYPES = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8"]
KINDS = [
    Kind(f"{order}{dt}", dtype=f"{order}{dt}", suffix=suffix)
    for order in "<>"
    for dt, suffix in zip(DTYPES, [".nii.gz", ".nii"] * 5, strict=True)
] + [
    Kind("scaled-int16", slope=0.0123, inter=5.5),
    Kind("scaled-int16-big-endian", dtype=">i2", suffix=".nii", slope=0.0123, inter=5.5),
    Kind("scaled-uint8", dtype="<u1", slope=0.5, inter=-1.0),
    Kind("scaled-float32-big-endian", dtype=">f4", slope=0.5, inter=-1.0),
    Kind("scaled-int32", dtype="<i4", slope=0.0123, inter=5.5),  # scaled in float64
    Kind("scaled-float64-big-endian", dtype=">f8", slope=-3.25, inter=1000.0),
    Kind("slope-0-no-scaling", slope=0.0, inter=7.0),
    Kind("slope-nan-no-scaling", slope=math.nan, inter=7.0),
    Kind("slope-inf-no-scaling", dtype=">i2", slope=math.inf, inter=7.0),
    Kind("sform-only", forms="sform"),
    Kind("qform-only", dtype=">f4", forms="qform"),
    Kind("qform-left-handed", forms="qform-left", suffix=".nii"),
    Kind("neither-form", forms="neither", note="neither sform nor qform is set"),
    Kind("forms-disagree", forms="disagree", note="sform and qform disagree by 5.0 mm"),
    Kind("bad-sform-code", forms="bad-sform-code", note="sform_code 9 is not a NIfTI code"),
    Kind("nifti2", dtype="<f4", version=2),
    Kind("nifti2-big-endian", dtype=">i2", version=2, suffix=".nii"),
    Kind("4d-one-time-point", four_d=True),
    Kind("rgb24", dtype="|u1", datatype=128, refused="RGB24 data (datatype 128)"),
    Kind("rgba32", dtype="|u1", datatype=2304, refused="RGBA32 data (datatype 2304)"),
    Kind("complex64", dtype="<c8", datatype=32, refused="complex64 data (datatype 32)"),
    Kind("float128", dtype="<f8", datatype=1536, refused="datatype 1536 (float128) is not"),
    Kind("pixdim-zero", pixdim=(0.0, 2.5, 3.0), refused="pixdim[1] = 0: the voxel size"),
    Kind("pixdim-negative", pixdim=(2.0, 2.5, -3.0), refused="pixdim[3] = -3: the voxel size"),
    Kind("pixdim-nan", dtype=">i2", pixdim=(2.0, math.nan, 3.0), refused="pixdim[2] = nan"),
    Kind("inter-nan", slope=2.0, inter=math.nan, refused="scl_inter = nan with scl_slope = 2"),
]
IDS = [k.name for k in KINDS]
_BYTES_PER_VOXEL = {128: 3, 2304: 4, 32: 8, 1536: 16}


def raw_values(kind: Kind, seed: int = 0) -> np.ndarray:
    """Random voxel values of ``SHAPE`` that the kind's data type holds, with its extremes
    (integers beyond 2^24 round in float32: that rounding is checked too)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(kind.dtype)
    if dtype.kind == "f":
        return rng.normal(100.0, 300.0, SHAPE)
    if dtype.kind == "c":
        return rng.normal(size=SHAPE)
    info = np.iinfo(dtype)
    lo, hi = max(int(info.min), -(2**31)), min(int(info.max), 2**31 - 1)
    values = rng.integers(max(lo, -1000), min(hi, 1000), SHAPE, endpoint=True).astype(np.float64)
    values.flat[:2] = [lo, hi]
    return values


def write(path: Path, kind: Kind, values: np.ndarray) -> Path:
    """Write ``values`` (raw, before scaling) as ``kind`` says, byte for byte: a writer's own
    choices (nibabel resets scaling and pixdims) must not hide what is being tested."""
    order = "<" if kind.dtype[0] == "|" else kind.dtype[0]
    klass = nib.Nifti2Header if kind.version == 2 else nib.Nifti1Header
    header = klass(endianness=order)
    if kind.datatype is None:
        header.set_data_dtype(np.dtype(kind.dtype).newbyteorder("="))
    else:
        header["datatype"] = kind.datatype
        header["bitpix"] = 8 * _BYTES_PER_VOXEL[kind.datatype]
    shape = (*SHAPE, 1) if kind.four_d else SHAPE
    header.set_data_shape(shape)
    _set_forms(header, kind)
    if kind.pixdim is not None:
        header["pixdim"][1:4] = kind.pixdim
    header["scl_slope"], header["scl_inter"] = kind.slope, kind.inter
    header["vox_offset"] = header.single_vox_offset
    if kind.datatype in _BYTES_PER_VOXEL:
        voxels = bytes(_BYTES_PER_VOXEL[kind.datatype] * values.size)
    else:
        voxels = values.astype(kind.dtype).tobytes(order="F")
    raw = header.binaryblock + bytes(4) + voxels
    path = path.with_name(path.name + kind.suffix)
    path.write_bytes(gzip.compress(raw, mtime=0) if kind.suffix == ".nii.gz" else raw)
    return path


def _set_forms(header: nib.Nifti1Header, kind: Kind) -> None:
    affine = kind.affine()
    header.set_zooms((*ZOOMS, 1.0)[: len(header.get_data_shape())])
    if kind.forms in ("both", "qform", "qform-left", "disagree", "bad-sform-code"):
        header.set_qform(affine, code=1)
    if kind.forms in ("both", "sform"):
        header.set_sform(affine, code=1)
    if kind.forms == "disagree":
        moved = affine.copy()
        moved[:3, 3] += [3.0, 4.0, 0.0]  # 5 mm
        header.set_qform(moved, code=1)
        header.set_sform(affine, code=1)
    if kind.forms == "bad-sform-code":
        header.set_sform(np.diag([9.0, 9.0, 9.0, 1.0]), code=1)
        header["sform_code"] = 9  # not a NIfTI code: nibabel ignores the sform


def scaled(kind: Kind, raw: np.ndarray) -> np.ndarray:
    """The intensities the standard defines, in float64 from the float32 scale factors."""
    if not kind.scales:
        return raw.astype(np.float64)
    return raw * np.float64(np.float32(kind.slope)) + np.float64(np.float32(kind.inter))


def assert_float32_intensities(kind: Kind, got: np.ndarray, raw: np.ndarray) -> None:
    """``got`` (float32) equals the float64 reference within float32 rounding.

    Unscaled: one rounding, at most half a float32 ulp of the value. Scaled: at most two (the
    product and the sum, in float32 for 8- and 16-bit integers; else float64 and then one
    rounding to float32), each at most half an ulp of its exact result; one full ulp of the
    product plus one of the result covers both and the float64 roundings (2^-53 relative,
    2^29 times smaller).
    """
    reference = scaled(kind, raw)
    assert got.dtype == np.float32
    if kind.scales:
        product = np.abs(raw * np.float64(np.float32(kind.slope)))
        tolerance = np.spacing(product.astype(np.float32)) + np.spacing(
            np.abs(reference).astype(np.float32)
        )
    else:
        tolerance = 0.5 * np.spacing(np.abs(reference).astype(np.float32))
    error = np.abs(got.astype(np.float64) - reference)
    assert np.all(error <= tolerance), (kind.name, float(np.max(error - tolerance)))


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    model = {"name": "UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}
    return build_network(model, len(CLASSES) + 1).eval()


PLAN = make_small_plan()
INFERENCE = {**default_config()["inference"], "device": "cpu", "num_workers": 1}


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_validation_accepts_each_kind_or_names_its_problem(tmp_path, kind, caplog):
    image = write(tmp_path / "image", kind, raw_values(kind))
    label = tmp_path / "label.nii.gz"
    save_nifti(label, np.zeros(SHAPE, np.uint8), kind.affine())
    caplog.set_level(logging.WARNING, logger="cohortseg.inputs.validate")

    found = validate_subject(Subject("sub-k", str(image), str(label), "train"), 4, 64, 1.0)

    if kind.refused:
        assert len(found) == 1, found
        assert (found[0].subject, found[0].kind, found[0].file) == ("sub-k", "image", str(image))
        assert kind.refused in found[0].problem
    else:
        assert found == []
    notes = [r.getMessage() for r in caplog.records if r.name == "cohortseg.inputs.validate"]
    if kind.note:
        assert [n for n in notes if kind.note in n and f"sub-k: image {image}" in n], notes
    else:
        assert notes == []


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_inference_segments_each_kind_on_its_grid_with_its_intensities(tmp_path, kind, network):
    raw = raw_values(kind)
    image = write(tmp_path / "image", kind, raw)
    item = ShardItem("sub-k", str(image), str(tmp_path / "seg.nii.gz"))

    failures = segment_items(network, PLAN, [item], INFERENCE, torch.device("cpu"))

    if kind.refused:
        assert [(f.subject, f.path) for f in failures] == [("sub-k", str(image))]
        assert kind.refused in failures[0].problem
        assert not Path(item.output).exists()
        return
    assert failures == []
    seg = nib.load(item.output)
    assert seg.shape == SHAPE and seg.get_data_dtype() == np.uint8
    np.testing.assert_allclose(seg.affine, kind.affine(), atol=AFFINE_ATOL_MM)
    # what the device receives, back in the file's voxel order
    canonical = read_volume(item)
    on_device = device_intensities(canonical.data)[0].numpy()
    assert_float32_intensities(kind, undo_reorient(on_device, canonical.orientation), raw)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_preprocessing_takes_each_kind_to_the_plans_grid(tmp_path, kind):
    raw = raw_values(kind)
    image = write(tmp_path / "image", kind, raw)
    label = tmp_path / "label.nii.gz"
    save_nifti(label, (raw_values(Kind("l", dtype="u1"), 1) % 4).astype(np.uint8), kind.affine())

    if kind.refused:
        with pytest.raises(InvalidInputError, match=re.escape(kind.refused)) as err:
            prepare_subject("sub-k", str(image), str(label), PLAN)
        assert (err.value.subject, err.value.path) == ("sub-k", str(image))
        return
    tensor, grid_label, geometry = prepare_subject("sub-k", str(image), str(label), PLAN)
    assert tensor.shape == grid_label.shape and torch.isfinite(tensor).all()
    assert geometry.native_shape == SHAPE
    np.testing.assert_allclose(geometry.native_affine, kind.affine(), atol=AFFINE_ATOL_MM)
    data, _ = load_nifti(image, "sub-k")  # what preprocessing (and training) read
    assert_float32_intensities(kind, data, raw)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_evaluation_reads_a_label_of_each_kind(tmp_path, kind):
    classes = (raw_values(Kind("l", dtype="u1"), 2) % 4).astype(np.float64)
    # raw values that scale to the class numbers where the scaling allows it exactly
    raw = classes
    if kind.scales and not kind.refused:
        raw = (classes - np.float32(kind.inter)) / np.float32(kind.slope)
    label = write(tmp_path / "label", kind, raw)
    segmentation = tmp_path / "seg.nii.gz"
    save_nifti(segmentation, classes, kind.affine(), dtype=np.uint8)

    def evaluate() -> dict:
        return evaluate_subject("sub-k", "test", str(segmentation), str(label), CLASSES)

    exact = np.array_equal(scaled(kind, raw.astype(kind.dtype)), classes)
    if kind.refused or not exact:
        problem = kind.refused or "is not a whole number in 0..255"
        with pytest.raises(InvalidInputError, match=re.escape(problem)) as err:
            evaluate()
        assert (err.value.subject, err.value.path) == ("sub-k", str(label))
        return
    row = evaluate()
    assert [row[f"dice_{c}"] for c in CLASSES] == [1.0, 1.0, 1.0]
    assert [row[f"hd95_mm_{c}"] for c in CLASSES] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", [np.float16, np.uint16, np.uint64])
def test_arrays_of_types_no_nifti_file_holds_enter_the_device_too(dtype):
    """NIfTI has no float16 code, but an array handed to the library may be float16; torch
    takes unsigned 16- and 64-bit arrays as they are, too."""
    data = np.arange(math.prod(SHAPE)).reshape(SHAPE).astype(dtype)
    tensor, geometry = prepare_image(data, oblique(), PLAN, "cpu")
    assert torch.isfinite(tensor).all() and geometry.native_shape == SHAPE
    on_device = device_intensities(data)[0].numpy()
    np.testing.assert_array_equal(on_device, data.astype(np.float32))
