"""The bundle's metadata follows the MONAI Bundle Specification (checked offline by its rules:
the schema it names is downloaded by monai.bundle.verify_metadata, which CI cannot)."""

from __future__ import annotations

import copy
import json

import pytest

from cohortseg.inference.bundle.metadata import metadata_problems, runtime_requirements
from tests.test_pins import PYPROJECT, pins_from_pyproject


def metadata(exported) -> dict:
    return json.loads((exported.bundle / "configs" / "metadata.json").read_text())


def test_the_metadata_follows_the_specification(exported):
    meta = metadata(exported)
    assert metadata_problems(meta) == []
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["format"] == "magnitude" and image["num_channels"] == 1
    assert image["spatial_shape"] == exported.plan["patch_size"]
    assert image["dtype"] == "float32" and image["is_patch_data"] is True
    assert image["value_range"] == [] and image["channel_def"] == {"0": "image"}
    pred = meta["network_data_format"]["outputs"]["pred"]
    n = len(exported.plan["classes"]) + 1
    assert pred["format"] == "labels" and pred["num_channels"] == n
    assert pred["channel_def"] == {"0": "background", "1": "organ", "2": "shell", "3": "tube"}
    assert meta["required_packages_version"]["pytorch-ignite"] == "0.5.5"
    assert "cohortseg" not in meta["required_packages_version"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: m.pop("copyright"), "missing mandatory key 'copyright'"),
        (
            lambda m: m.__setitem__(
                "optional_packages_version", m.pop("required_packages_version")
            ),
            "old name",
        ),
        (lambda m: m.__setitem__("version", 1), "version must be a string"),
        (lambda m: _pred(m).__setitem__("format", "segmentation"), "format labels"),
        (lambda m: _pred(m).__setitem__("num_channels", 3), "channels 0..2"),
        (lambda m: _pred(m).pop("modality"), "missing 'modality'"),
        (lambda m: _pred(m).__setitem__("value_range", [1, 0]), "MIN <= MAX"),
        (lambda m: _pred(m).__setitem__("value_range", [0]), "[MIN, MAX] or []"),
        (lambda m: _pred(m).__setitem__("is_patch_data", "yes"), "true or false"),
        (lambda m: _pred(m).__setitem__("spatial_shape", [0, 8, 8]), "positive integers"),
        (lambda m: _pred(m).__setitem__("type", "volume"), "type 'volume'"),
        (lambda m: m["network_data_format"].__setitem__("inputs", {}), "at least one tensor"),
    ],
)
def test_the_rules_catch_what_breaks_the_specification(exported, change, problem):
    meta = copy.deepcopy(metadata(exported))
    change(meta)
    assert any(problem in p for p in metadata_problems(meta)), metadata_problems(meta)


def _pred(meta: dict) -> dict:
    return meta["network_data_format"]["outputs"]["pred"]


def test_the_runtime_is_cohortsegs_pins():
    pins = dict(pins_from_pyproject(PYPROJECT))
    required = runtime_requirements()
    for name in ("torch", "monai", "numpy", "nibabel", "fire"):
        assert required[name] == pins[name], name
    assert set(required) == {"torch", "monai", "numpy", "nibabel", "fire", "pytorch-ignite"}
