"""Tests for cohortseg.core.io: atomic writes, NIfTI round-trips and errors, TSV and JSON."""

from __future__ import annotations

import gzip
import math
import os
import stat

import nibabel as nib
import numpy as np
import pytest
import torch

from cohortseg.core.errors import CohortsegError, InvalidInputError
from cohortseg.core.io import (
    atomic_write,
    load_nifti,
    read_json,
    read_tsv,
    save_nifti,
    write_json,
    write_tsv,
)


def oblique_affine() -> np.ndarray:
    """Rotated by 25 degrees about an oblique axis, x flipped, 0.8 x 1.1 x 3.0 mm, shifted."""
    axis = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.deg2rad(25)
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-0.8, 1.1, 3.0])
    affine[:3, 3] = [12.5, -40.25, 7.0]
    return affine


# --------------------------------------------------------------------------------------------
# atomic_write


def test_atomic_write_publishes_the_file_only_when_complete(tmp_path):
    final = tmp_path / "out" / "table.tsv"

    with atomic_write(final) as tmp:
        tmp.write_text("first half\n")
        assert not final.exists()
        with open(tmp, "a") as handle:
            handle.write("second half\n")

    assert final.read_text() == "first half\nsecond half\n"
    assert os.listdir(final.parent) == ["table.tsv"]


def test_atomic_write_leaves_no_file_when_the_block_raises(tmp_path):
    final = tmp_path / "seg.nii.gz"

    with pytest.raises(RuntimeError, match="disk on fire"), atomic_write(final) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk on fire")

    assert os.listdir(tmp_path) == []


def test_atomic_write_keeps_the_previous_file_when_the_block_raises(tmp_path):
    final = tmp_path / "plan.json"
    final.write_text("old, complete content")

    with pytest.raises(ValueError), atomic_write(final) as tmp:
        tmp.write_text("new, half-written")
        raise ValueError

    assert final.read_text() == "old, complete content"
    assert os.listdir(tmp_path) == ["plan.json"]


def test_atomic_write_gives_the_permissions_of_a_normal_write(tmp_path):
    old_umask = os.umask(0o022)
    try:
        write_json(tmp_path / "atomic.json", {})
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(old_umask)

    plain = stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)
    assert plain == 0o644
    assert stat.S_IMODE((tmp_path / "atomic.json").stat().st_mode) == plain


@pytest.mark.parametrize("name, gzipped", [("a.nii.gz", True), ("a.nii", False)])
def test_save_nifti_format_follows_the_final_name(tmp_path, name, gzipped):
    save_nifti(tmp_path / name, np.zeros((3, 4, 5), np.float32), np.eye(4))

    magic = (tmp_path / name).read_bytes()[:2]
    assert (magic == b"\x1f\x8b") == gzipped
    assert os.listdir(tmp_path) == [name]


# --------------------------------------------------------------------------------------------
# NIfTI round-trip


@pytest.mark.parametrize("name", ["img.nii.gz", "img.nii"])
def test_nifti_round_trip_keeps_data_and_oblique_affine(tmp_path, name):
    rng = np.random.default_rng(0)
    data = rng.normal(100, 30, (7, 6, 5)).astype(np.float32)
    affine = oblique_affine()

    save_nifti(tmp_path / name, data, affine)
    loaded, loaded_affine = load_nifti(tmp_path / name, "sub-01")

    assert loaded.dtype == np.float32
    assert loaded.shape == (7, 6, 5)
    np.testing.assert_array_equal(loaded, data)
    assert loaded_affine.dtype == np.float64
    np.testing.assert_allclose(loaded_affine, affine, atol=1e-5)


def test_saved_qform_and_sform_both_hold_the_affine_in_scanner_space(tmp_path):
    affine = oblique_affine()
    save_nifti(tmp_path / "img.nii.gz", np.zeros((4, 4, 4), np.int16), affine)

    header = nib.load(tmp_path / "img.nii.gz").header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    assert (int(qcode), int(scode)) == (1, 1)
    np.testing.assert_allclose(qform, affine, atol=1e-5)
    np.testing.assert_allclose(sform, affine, atol=1e-5)
    assert header.get_xyzt_units() == ("mm", "sec")


def test_save_nifti_keeps_the_array_dtype_by_default(tmp_path):
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5) - 30
    save_nifti(tmp_path / "img.nii.gz", data, np.eye(4))

    assert nib.load(tmp_path / "img.nii.gz").get_data_dtype() == np.int16
    loaded, _ = load_nifti(tmp_path / "img.nii.gz", dtype=np.int16)
    assert loaded.dtype == np.int16
    np.testing.assert_array_equal(loaded, data)


def test_save_nifti_writes_the_requested_dtype(tmp_path):
    labels = np.zeros((5, 5, 5), np.int64)
    labels[1:3, 1:4, 2:5] = 3
    save_nifti(tmp_path / "seg.nii.gz", labels, oblique_affine(), dtype=np.uint8)

    assert nib.load(tmp_path / "seg.nii.gz").get_data_dtype() == np.uint8
    loaded, _ = load_nifti(tmp_path / "seg.nii.gz", dtype=np.uint8)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, labels)


def test_saved_header_drops_free_text_and_extensions_of_the_source(tmp_path):
    source = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), oblique_affine())
    source.header["descrip"] = b"Patient: Jane Doe, DOB 1970-01-01"
    source.header["aux_file"] = b"jane.doe"
    source.header["db_name"] = b"hospital-pacs"
    source.header["intent_name"] = b"secret"
    source.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"MRN 123456"))
    nib.save(source, tmp_path / "source.nii.gz")
    assert nib.load(tmp_path / "source.nii.gz").header.extensions  # the source really has one

    data, affine = load_nifti(tmp_path / "source.nii.gz", "sub-01")
    save_nifti(tmp_path / "clean.nii.gz", data, affine)

    header = nib.load(tmp_path / "clean.nii.gz").header
    for field in ("descrip", "aux_file", "db_name", "intent_name"):
        assert header[field].item() == b"", field
    assert len(header.extensions) == 0
    assert b"Jane" not in gzip.decompress((tmp_path / "clean.nii.gz").read_bytes())


# --------------------------------------------------------------------------------------------
# load_nifti errors


def test_load_nifti_missing_file_names_subject_and_file(tmp_path):
    path = tmp_path / "nowhere.nii.gz"

    with pytest.raises(InvalidInputError) as info:
        load_nifti(path, "sub-07")

    assert info.value.subject == "sub-07"
    assert info.value.path == str(path)
    assert "sub-07" in str(info.value) and str(path) in str(info.value)
    assert "does not exist" in str(info.value)


@pytest.mark.parametrize("name", ["random.nii.gz", "random.nii"])
def test_load_nifti_rejects_a_file_that_is_not_nifti(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).bytes(2000))

    with pytest.raises(InvalidInputError) as info:
        load_nifti(path, "sub-02")

    assert "sub-02" in str(info.value) and str(path) in str(info.value)
    assert "not a NIfTI file" in str(info.value) or "truncated or corrupt" in str(info.value)


def test_load_nifti_rejects_a_truncated_gzip_file(tmp_path):
    data = np.random.default_rng(2).normal(size=(16, 16, 16)).astype(np.float32)
    save_nifti(tmp_path / "whole.nii.gz", data, np.eye(4))
    raw = (tmp_path / "whole.nii.gz").read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])

    with pytest.raises(InvalidInputError) as info:
        load_nifti(path, "sub-03")

    assert "sub-03" in str(info.value) and str(path) in str(info.value)


def test_invalid_input_is_a_cohortseg_error(tmp_path):
    with pytest.raises(CohortsegError):
        load_nifti(tmp_path / "missing.nii", "sub-01")


@pytest.mark.parametrize("shape", [(8, 9), (8, 9, 10, 3)])
def test_load_nifti_rejects_volumes_that_are_not_3d(tmp_path, shape):
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), path)

    with pytest.raises(InvalidInputError, match="3D") as info:
        load_nifti(path, "sub-04")

    assert "sub-04" in str(info.value) and str(shape) in str(info.value)


def test_load_nifti_accepts_4d_with_one_time_point_as_3d(tmp_path):
    data = np.arange(8 * 9 * 10, dtype=np.float32).reshape(8, 9, 10, 1)
    affine = oblique_affine()
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)

    loaded, loaded_affine = load_nifti(path, "sub-05")

    assert loaded.shape == (8, 9, 10)
    np.testing.assert_array_equal(loaded, data[..., 0])
    np.testing.assert_allclose(loaded_affine, affine, atol=1e-5)


# --------------------------------------------------------------------------------------------
# TSV and JSON


def test_tsv_round_trip(tmp_path):
    rows = [
        {"subject": "sub-01", "split": "train", "dice": 0.912345678, "n": 3},
        {"subject": "sub 02", "split": "test", "dice": math.nan, "n": None},
        {"subject": "sub-03", "split": "infer"},  # missing cells
    ]
    columns = ["subject", "split", "dice", "n"]
    path = tmp_path / "metrics" / "table.tsv"

    write_tsv(path, rows, columns)

    assert path.read_text().splitlines()[0] == "subject\tsplit\tdice\tn"
    assert read_tsv(path) == [
        {"subject": "sub-01", "split": "train", "dice": "0.912346", "n": "3"},
        {"subject": "sub 02", "split": "test", "dice": "nan", "n": ""},
        {"subject": "sub-03", "split": "infer", "dice": "", "n": ""},
    ]
    assert os.listdir(path.parent) == ["table.tsv"]


def test_tsv_with_no_rows_has_the_header_only(tmp_path):
    write_tsv(tmp_path / "empty.tsv", [], ["subject", "dice"])

    assert (tmp_path / "empty.tsv").read_text() == "subject\tdice\n"
    assert read_tsv(tmp_path / "empty.tsv") == []


def test_json_round_trip(tmp_path):
    obj = {"plan": {"patch_size": [64, 64, 32], "spacing_mm": [0.8, 0.8, 2.5]}, "hash": "ab12"}
    path = tmp_path / "plans" / "plan.json"

    write_json(path, obj)

    assert read_json(path) == obj
    assert path.read_text().endswith("\n")
    assert os.listdir(path.parent) == ["plan.json"]


# --------------------------------------------------------------------------------------------
# byte order and headers as written


def nifti_bytes(header: nib.Nifti1Header, data: np.ndarray) -> bytes:
    """A one-file NIfTI exactly as ``header`` says (no fixes by a writer): the header, the
    4-byte extension flag, the voxels in the header's data type and byte order."""
    header = header.copy()
    header.set_data_shape(data.shape)
    header["vox_offset"] = 352
    voxels = np.asarray(data, header.get_data_dtype()).tobytes(order="F")
    return header.binaryblock + bytes(4) + voxels


@pytest.mark.parametrize("name", ["big.nii", "big.nii.gz"])
@pytest.mark.parametrize("dtype", [None, np.float32, np.uint8])
def test_a_big_endian_file_loads_in_native_byte_order_for_torch(tmp_path, name, dtype):
    # every reader of file data goes through load_nifti: inference (dtype None), preprocessing,
    # training's validation and trust (float32), evaluation and labels (uint8)
    header = nib.Nifti1Header(endianness=">")
    header.set_data_dtype(np.int16)
    values = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    raw = nifti_bytes(header, values)
    (tmp_path / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)

    data, _ = load_nifti(tmp_path / name, "sub-01", dtype=dtype)

    assert data.dtype == (dtype or np.int16) and data.dtype.isnative
    np.testing.assert_array_equal(torch.as_tensor(data).numpy(), values)


def test_a_native_file_is_not_copied_when_read_in_its_own_type(tmp_path):
    save_nifti(tmp_path / "img.nii", np.ones((4, 5, 6), np.int16), np.eye(4))

    data, _ = load_nifti(tmp_path / "img.nii", "sub-01", dtype=None)

    assert isinstance(data.base, np.memmap) or isinstance(data, np.memmap)  # the file's pages


@pytest.mark.parametrize(
    "values, problem",
    [
        (np.array([0.0, 1.5]), "voxel value 1.5 is not a whole number in 0..255"),
        (np.array([0, 256], np.int16), "voxel value 256 is not a whole number in 0..255"),
        (np.array([-1, 2], np.int16), "voxel value -1 is not a whole number"),
    ],
)
def test_a_label_map_that_uint8_cannot_hold_is_refused_not_wrapped(tmp_path, values, problem):
    save_nifti(tmp_path / "lab.nii.gz", values.reshape(2, 1, 1), np.eye(4))

    with pytest.raises(InvalidInputError, match=problem) as info:
        load_nifti(tmp_path / "lab.nii.gz", "sub-09", dtype=np.uint8)

    assert info.value.subject == "sub-09"
