"""DICOM series in: geometry exact against the tags, slice order from positions, one echo of a
multi-echo series, and every way a folder can fail to be one regular volume refused with the
reason (no description or source UID in the reason in pseudonymised runs)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import UID, generate_uid

from cohortseg.dicom.series import (
    DicomSeriesError,
    choose_series,
    find_series,
    looks_like_uid,
    read_series,
    select_echo,
    select_series,
)
from cohortseg.dicom.writers import along_normal, write_series
from cohortseg.inputs.demo import demo_phantom

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_ENHANCED_MR = (
    Path(nib.__file__).parent / "nicom" / "tests" / "data" / "philips_mprage.dcm.gz"
)
TOLERANCE_MM = 0.1


def phantom(seed: int = 1, shape=(24, 20, 10)):
    """An oblique demo phantom on a grid whose third axis follows the DICOM slice normal."""
    image, label, affine = demo_phantom(shape, [1.7, 1.9, 2.4], seed)
    affine, (image, label) = along_normal(affine, image, label)
    return image, label, affine


def convert(folder, selector=None):
    series, _ = find_series(folder)
    return read_series(select_series(series, selector), TOLERANCE_MM)


def rewrite(path, **changes):
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)


def by_position(paths):
    """Files sorted along the slice normal as computed here from their tags (independently of
    cohortseg.dicom.series)."""
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    iop = np.asarray(headers[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(
        paths,
        key=lambda p: float(np.asarray(pydicom.dcmread(p).ImagePositionPatient, float) @ normal),
    )


def corners_from_tags(first, last, rows, cols, spacing, iop):
    """World (RAS) positions of the eight corner voxel centres of a stack whose first and last
    slices are at ImagePositionPatient ``first`` and ``last`` (LPS)."""
    row_dir, col_dir = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    dr, dc = float(spacing[0]), float(spacing[1])  # between rows, between columns
    out = []
    for origin in (np.asarray(first, float), np.asarray(last, float)):
        for r in (0, rows - 1):
            for c in (0, cols - 1):
                lps = origin + c * dc * row_dir + r * dr * col_dir
                out.append(lps * [-1, -1, 1])
    return np.array(out)


def corners_from_affine(affine, shape):
    x, y, z = (n - 1 for n in shape)
    idx = [(i, j, k) for k in (0, z) for j in (0, y) for i in (0, x)]
    return np.array([(affine @ [*v, 1])[:3] for v in idx])


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_affine_agrees_with_the_tags_within_a_hundredth_of_a_mm(tmp_path, seed):
    image, _, affine = phantom(seed)
    paths = write_series(tmp_path, image, affine, seed=seed)
    converted = convert(tmp_path)
    ordered = by_position(paths)
    first, last = (pydicom.dcmread(p) for p in (ordered[0], ordered[-1]))
    expected = corners_from_tags(
        first.ImagePositionPatient,
        last.ImagePositionPatient,
        first.Rows,
        first.Columns,
        first.PixelSpacing,
        first.ImageOrientationPatient,
    )
    got = corners_from_affine(converted.affine, converted.data.shape)
    assert np.abs(got - expected).max() < 0.01
    # the voxels are the written ones, in the written order (values stored as int16 exactly)
    np.testing.assert_array_equal(converted.data, image.astype(np.float32))


def test_slice_order_comes_from_positions_not_file_names_or_instance_numbers(tmp_path):
    image, _, affine = phantom(2)
    paths = write_series(tmp_path, image, affine, seed=2)
    numbers = [int(pydicom.dcmread(p).InstanceNumber) for p in by_position(paths)]
    names = [p.name for p in by_position(paths)]
    assert numbers != sorted(numbers) and names != sorted(names)
    np.testing.assert_array_equal(convert(tmp_path).data, image.astype(np.float32))


def test_multi_frame_enhanced_object_converts_like_the_single_frame_series(tmp_path):
    image, _, affine = phantom(3)
    write_series(tmp_path / "single", image, affine, seed=3)
    (path,) = write_series(tmp_path / "multi", image, affine, seed=3, multi_frame=True)
    single, multi = convert(tmp_path / "single"), convert(tmp_path / "multi")
    assert multi.multi_frame and not single.multi_frame
    np.testing.assert_array_equal(multi.data, single.data)
    assert np.abs(multi.affine - single.affine).max() < 1e-6
    ds = pydicom.dcmread(path)
    frames = ds.PerFrameFunctionalGroupsSequence
    first = frames[0].PlanePositionSequence[0].ImagePositionPatient
    last = frames[-1].PlanePositionSequence[0].ImagePositionPatient
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    spacing = shared.PixelMeasuresSequence[0].PixelSpacing
    expected = corners_from_tags(first, last, ds.Rows, ds.Columns, spacing, iop)
    got = corners_from_affine(multi.affine, multi.data.shape)
    # frames are written in position order here; either end may be first
    assert (
        min(np.abs(got - expected).max(), np.abs(got - expected[[4, 5, 6, 7, 0, 1, 2, 3]]).max())
        < 0.01
    )


def test_real_enhanced_mr_that_nibabel_ships(tmp_path):
    """An oblique Philips Enhanced MR (176 frames of 256 x 256), geometry from its tags."""
    path = tmp_path / "mprage.dcm"
    path.write_bytes(gzip.decompress(NIBABEL_ENHANCED_MR.read_bytes()))
    converted = convert(path)
    assert converted.multi_frame and converted.data.shape == (256, 256, 176)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    frames = ds.PerFrameFunctionalGroupsSequence
    iop = frames[0].PlaneOrientationSequence[0].ImageOrientationPatient
    spacing = frames[0].PixelMeasuresSequence[0].PixelSpacing
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    positions = sorted(
        (np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float) for f in frames),
        key=lambda p: float(p @ normal),
    )
    expected = corners_from_tags(positions[0], positions[-1], ds.Rows, ds.Columns, spacing, iop)
    got = corners_from_affine(converted.affine, converted.data.shape)
    assert np.abs(got - expected).max() < 0.01
    assert np.linalg.det(converted.affine[:3, :3]) != 0


def test_missing_slice_is_refused_naming_the_gap(tmp_path):
    image, _, affine = phantom()
    paths = by_position(write_series(tmp_path, image, affine))
    paths[4].unlink()
    with pytest.raises(DicomSeriesError, match=r"missing slice\(s\): 1 gap.*about 1 slice"):
        convert(tmp_path)


def test_non_uniform_spacing_is_refused(tmp_path):
    image, _, affine = phantom()
    paths = by_position(write_series(tmp_path, image, affine))
    ds = pydicom.dcmread(paths[3])
    iop = np.asarray(ds.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    moved = np.asarray(ds.ImagePositionPatient, float) + 0.6 * normal
    rewrite(paths[3], ImagePositionPatient=[f"{v:.6f}" for v in moved])
    with pytest.raises(DicomSeriesError, match="non-uniform slice spacing"):
        convert(tmp_path)


def test_gantry_tilt_is_refused_with_its_angle(tmp_path):
    image, _, affine = phantom()
    paths = by_position(write_series(tmp_path, image, affine))
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        col_dir = np.asarray(ds.ImageOrientationPatient, float)[3:]
        shifted = np.asarray(ds.ImagePositionPatient, float) + k * 0.5 * col_dir
        rewrite(path, ImagePositionPatient=[f"{v:.6f}" for v in shifted])
    with pytest.raises(DicomSeriesError, match=r"gantry tilt.*degrees"):
        convert(tmp_path)


def test_mixed_sizes_and_orientations_are_refused(tmp_path):
    image, _, affine = phantom()
    paths = write_series(tmp_path / "size", image, affine)
    rewrite(paths[2], Rows=int(image.shape[1]) + 2)
    with pytest.raises(DicomSeriesError, match="mixed image sizes"):
        convert(tmp_path / "size")
    paths = write_series(tmp_path / "orientation", image, affine)
    rewrite(paths[2], ImageOrientationPatient=["1", "0", "0", "0", "1", "0"])
    with pytest.raises(DicomSeriesError, match="mixed orientations"):
        convert(tmp_path / "orientation")


def test_several_frames_at_one_position_are_refused(tmp_path):
    image, _, affine = phantom()
    paths = write_series(tmp_path, image, affine)
    echo = tmp_path / "echo2.dcm"
    shutil.copy(paths[0], echo)
    rewrite(echo, SOPInstanceUID=generate_uid())
    with pytest.raises(DicomSeriesError, match="share slice positions"):
        convert(tmp_path)


def test_several_series_need_a_selector_and_the_error_names_them(tmp_path):
    image, _, affine = phantom()
    write_series(tmp_path / "a", image, affine, description="SAG_3D_DESS", seed=1)
    write_series(
        tmp_path / "b",
        image[::2, ::2],
        affine @ np.diag([2, 2, 1, 1]),
        description="COR_T1",
        seed=2,
    )
    with pytest.raises(DicomSeriesError, match="holds 2 image series") as err:
        convert(tmp_path)
    assert "'SAG_3D_DESS' (MR, 10 file(s)" in str(err.value) and "'COR_T1'" in str(err.value)
    assert convert(tmp_path, "DESS").data.shape == image.shape
    assert convert(tmp_path, "^COR").data.shape == image[::2, ::2].shape
    uid = str(pydicom.dcmread(next((tmp_path / "b").iterdir())).SeriesInstanceUID)
    assert looks_like_uid(uid) and not looks_like_uid("SAG_3D_DESS")
    assert convert(tmp_path, uid).data.shape == image[::2, ::2].shape
    with pytest.raises(DicomSeriesError, match="no series matches the series selector 'FLAIR'"):
        convert(tmp_path, "FLAIR")
    with pytest.raises(DicomSeriesError, match="2 series match"):
        convert(tmp_path, "_")


def test_non_image_objects_are_skipped_and_a_folder_of_only_those_is_refused(tmp_path):
    image, _, affine = phantom()
    write_series(tmp_path / "mixed", image, affine)
    for name in ("rtplan.dcm", "reportsi.dcm"):  # real non-image objects pydicom ships
        shutil.copy(PYDICOM_FILES / name, tmp_path / "mixed" / name)
    (tmp_path / "mixed" / "notes.txt").write_text("not DICOM")
    series, skipped = find_series(tmp_path / "mixed")
    assert len(series) == 1 and len(skipped) == 3
    assert any("rtplan.dcm: not an image object (RT Plan Storage)" in s for s in skipped)
    assert any("notes.txt: not a DICOM file" in s for s in skipped)
    assert convert(tmp_path / "mixed").data.shape == image.shape
    (tmp_path / "none").mkdir()
    shutil.copy(PYDICOM_FILES / "rtplan.dcm", tmp_path / "none")
    with pytest.raises(DicomSeriesError, match="no DICOM image series found"):
        convert(tmp_path / "none")


def test_undecodable_compressed_transfer_syntax_is_named(tmp_path):
    image, _, affine = phantom()
    for path in write_series(tmp_path, image, affine):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.80")
        ds.PixelData = encapsulate([b"\xff\xd8" + bytes(64)])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomSeriesError) as err:
        convert(tmp_path)
    text = str(err.value)
    assert "JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80)" in text
    assert "\n" not in text


def test_truncated_file_is_named(tmp_path):
    image, _, affine = phantom()
    paths = write_series(tmp_path, image, affine)
    paths[1].write_bytes(paths[1].read_bytes()[:-300])
    with pytest.raises(DicomSeriesError, match=paths[1].name):
        convert(tmp_path)


def test_a_single_slice_is_not_a_volume():
    with pytest.raises(DicomSeriesError, match="a single slice"):
        convert(PYDICOM_FILES / "MR_small.dcm")


def multi_echo(tmp_path, echoes=(1, 2)):
    """One series folder holding each echo of the phantom (the same slice positions, the same
    SeriesInstanceUID; EchoNumbers and EchoTime differ, echo k's values scaled by k)."""
    image, _, affine = phantom(4)
    for echo in echoes:
        paths = write_series(tmp_path / f"echo{echo}", image * echo, affine, seed=4)
        for path in paths:
            rewrite(
                path,
                EchoNumbers=echo,
                EchoTime=str(5 * echo),
                SOPInstanceUID=generate_uid(entropy_srcs=[str(path), str(echo)]),
            )
    return image


def test_one_echo_of_a_multi_echo_series_is_selected_by_dicom_echo(tmp_path):
    image = multi_echo(tmp_path)
    (series,), _ = find_series(tmp_path)
    with pytest.raises(DicomSeriesError, match=r"2 echoes in one series \(EchoNumbers 1, 2\)"):
        select_echo(series, None)
    for echo in (1, 2):
        chosen, _ = choose_series(tmp_path, None, echo)
        assert len(chosen.files) == image.shape[2]
        converted = read_series(chosen, TOLERANCE_MM)
        np.testing.assert_array_equal(converted.data, (image * echo).astype(np.float32))
    with pytest.raises(DicomSeriesError, match="no such echo"):
        choose_series(tmp_path, None, 3)


def test_all_echoes_as_channels_are_refused_for_now(tmp_path):
    multi_echo(tmp_path)
    with pytest.raises(DicomSeriesError, match="dicom.echo: all .* not supported yet.*channel"):
        choose_series(tmp_path, None, "all")


def test_pseudonymised_runs_show_no_description_or_source_uid(tmp_path, monkeypatch):
    """PS3.15's Basic Profile removes Series Description: it stays out of every message of a
    pseudonymised run (selection errors reach results/qc/invalid_subjects.tsv), as UIDs do."""
    from cohortseg.core.redact import REDACT_ENV

    image, _, affine = phantom()
    write_series(tmp_path / "a", image, affine, description="SAG Roe^Richard", seed=1)
    write_series(tmp_path / "b", image, affine, description="COR Roe^Richard", seed=2)
    uid = str(pydicom.dcmread(next((tmp_path / "a").iterdir())).SeriesInstanceUID)
    monkeypatch.setenv(REDACT_ENV, "1")
    with pytest.raises(DicomSeriesError) as err:
        convert(tmp_path)
    text = str(err.value)
    assert "holds 2 image series: series 3 (MR, 10 file(s))" in text
    assert "Roe" not in text and uid not in text
    with pytest.raises(DicomSeriesError) as err:
        convert(tmp_path, "1.2.3.4.5")
    assert "the series selector <SeriesInstanceUID>" in str(err.value)
    assert str(DicomSeriesError(f"at {uid} (1.2.840.10008.1.2.4.80)")) == (
        "at <UID> (1.2.840.10008.1.2.4.80)"
    )
    monkeypatch.delenv(REDACT_ENV)
    assert "'SAG Roe^Richard'" in str(select_series(find_series(tmp_path)[0], "SAG"))
