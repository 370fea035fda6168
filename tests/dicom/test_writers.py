"""The DICOM writers of the demo and the tests: MR and CT series, one file per slice or one
enhanced multi-frame object, valid for dciodvfy and converted back exactly."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from cohortseg.dicom.series import find_series, read_series, select_series
from cohortseg.dicom.writers import along_normal, write_series
from cohortseg.inputs.demo import demo_phantom
from tests.dicom.dicom_tools import dciodvfy_errors


def phantom(seed=3):
    image, label, affine = demo_phantom([20, 18, 8], [1.7, 1.9, 2.4], seed)
    affine, (image, label) = along_normal(affine, image, label)
    return image, label, affine


@pytest.mark.parametrize("modality", ["MR", "CT"])
@pytest.mark.parametrize("multi_frame", [False, True])
def test_demo_series_pass_dciodvfy(tmp_path, modality, multi_frame):
    image, _, affine = phantom()
    paths = write_series(tmp_path, image, affine, modality=modality, multi_frame=multi_frame)
    assert dciodvfy_errors(paths) == []


def test_a_ct_series_converts_to_its_hounsfield_units_on_the_mr_grid(tmp_path):
    image, _, affine = phantom()
    hu = (image.astype(np.int32) - 1024).astype(np.int16)  # air below zero, as CT stores it
    write_series(tmp_path / "ct", hu, affine, modality="CT", seed=5)
    write_series(tmp_path / "mr", image, affine, seed=5)
    ct = read_series(select_series(find_series(tmp_path / "ct")[0], None), 0.1)
    mr = read_series(select_series(find_series(tmp_path / "mr")[0], None), 0.1)
    np.testing.assert_array_equal(ct.data, hu.astype(np.float32))
    assert np.abs(ct.affine - mr.affine).max() < 1e-9
    ds = pydicom.dcmread(next((tmp_path / "ct").iterdir()))
    assert ds.Modality == "CT" and ds.RescaleType == "HU"
