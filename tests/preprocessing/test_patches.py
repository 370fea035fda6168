"""Tests for cohortseg.preprocessing.patches: patch sampling, extraction, the HDF5 store and
PatchDataset."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from cohortseg.core.errors import CohortsegError
from cohortseg.preprocessing.patches import PatchDataset, extract, sample_origins, write_store

PATCH = [8, 8, 8]
PLAN = {"patch_size": PATCH, "hash": "0123456789abcdef"}


def centred_on_label(label: np.ndarray, origins: np.ndarray, size) -> np.ndarray:
    """Whether the centre voxel of each patch is labelled."""
    centres = origins + np.asarray(size) // 2
    return label[tuple(centres.T)] > 0


# --------------------------------------------------------------------------------------------
# sample_origins


def test_patches_stay_inside_a_volume_larger_than_the_patch():
    label = np.zeros((40, 36, 30), np.uint8)
    label[0:3, 0:3, 0:3] = 1  # foreground in the corners pulls patches outwards
    label[-2:, -2:, -2:] = 2
    size = [16, 12, 10]

    origins = sample_origins(label, size, 300, 0.5, np.random.default_rng(0))

    assert origins.shape == (300, 3) and origins.dtype == np.int64
    assert (origins >= 0).all()
    assert (origins + size <= label.shape).all()


def test_a_volume_smaller_than_the_patch_is_centred_in_it():
    label = np.zeros((10, 40, 9), np.uint8)
    label[4:6, 20:22, 4:6] = 1
    size = np.array([16, 16, 16])

    origins = sample_origins(label, size, 50, 0.5, np.random.default_rng(1))

    for axis in (0, 2):  # the small axes: the same origin for every patch, padding balanced
        assert len(set(origins[:, axis])) == 1
        before = -origins[0, axis]
        after = origins[0, axis] + size[axis] - label.shape[axis]
        assert before > 0 and after > 0 and abs(before - after) <= 1
    assert (origins[:, 1] >= 0).all() and (origins[:, 1] + 16 <= 40).all()


@pytest.mark.parametrize("fraction", [0.0, 0.33, 0.67, 1.0])
def test_foreground_share_matches_foreground_fraction(fraction):
    label = np.zeros((48, 48, 48), np.uint8)
    label[23:25, 23:25, 23:25] = 1  # a tiny structure: random patches almost never hit it
    size = [16, 16, 16]

    origins = sample_origins(label, size, 300, fraction, np.random.default_rng(2))

    share = centred_on_label(label, origins, size).mean()
    assert share == pytest.approx(fraction, abs=0.03)


def test_foreground_patches_draw_classes_uniformly_however_small():
    label = np.zeros((48, 48, 48), np.uint8)
    label[4:44, 4:44, 4:44] = 1  # large
    label[30, 30, 30] = 2  # one voxel
    size = [8, 8, 8]

    origins = sample_origins(label, size, 400, 1.0, np.random.default_rng(3))

    centres = origins + 4
    classes = label[tuple(centres.T)]
    assert (classes > 0).all()
    assert (classes == 2).mean() == pytest.approx(0.5, abs=0.08)


def test_sampling_is_reproducible_for_a_seed():
    label = np.zeros((20, 20, 20), np.uint8)
    label[5:9, 5:9, 5:9] = 1

    first = sample_origins(label, PATCH, 20, 0.5, np.random.default_rng(4))
    again = sample_origins(label, PATCH, 20, 0.5, np.random.default_rng(4))

    np.testing.assert_array_equal(first, again)


# --------------------------------------------------------------------------------------------
# extract


@pytest.mark.parametrize(
    "origin",
    [(0, 0, 0), (1, 2, 3), (-2, 1, 3), (2, -3, -1), (-4, -4, -4), (3, 4, 5), (10, 0, 0)]
    + [(-8, 0, 0)],  # entirely outside, on either side
)
def test_extract_pads_with_the_fill_value_outside(origin):
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    size = (6, 3, 5)
    margin = 12
    padded = np.pad(volume, margin, constant_values=-7.5)
    start = np.asarray(origin) + margin
    expected = padded[tuple(slice(a, a + s) for a, s in zip(start, size, strict=True))]

    patch = extract(volume, origin, size, fill=-7.5)

    assert patch.shape == size and patch.dtype == volume.dtype
    np.testing.assert_array_equal(patch, expected)


# --------------------------------------------------------------------------------------------
# write_store


def make_subject(seed: int, shape=(20, 18, 16)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 1, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[5:11, 4:9, 6:10] = 1
    label[12:15, 10:14, 3:6] = 2
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 2.5]
    return image, label, affine


def store(path, subject="sub-01", n_patches=6, seed=0, plan=PLAN, compression="lzf"):
    image, label, affine = make_subject(seed)
    write_store(
        path,
        subject,
        image,
        label,
        affine,
        spacing_mm=[1.5, 1.5, 2.0],
        plan=plan,
        n_patches=n_patches,
        foreground_fraction=0.5,
        compression=compression,
        compression_level=4,
        seed=seed,
    )
    return image, label, affine


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none", None])
def test_store_holds_one_patch_per_chunk_and_the_subject_attributes(tmp_path, compression):
    path = tmp_path / "patches" / "sub-01.h5"

    image, label, affine = store(path, n_patches=6, compression=compression)

    assert os.listdir(path.parent) == ["sub-01.h5"]
    with h5py.File(path, "r") as h5:
        assert h5["image"].shape == (6, 1, *PATCH) and h5["image"].dtype == np.float32
        assert h5["label"].shape == (6, *PATCH) and h5["label"].dtype == np.uint8
        assert h5["image"].chunks == (1, 1, *PATCH)
        assert h5["label"].chunks == (1, *PATCH)
        assert h5["origin"].shape == (6, 3)
        assert h5.attrs["subject"] == "sub-01"
        np.testing.assert_array_equal(h5.attrs["spacing_mm"], [1.5, 1.5, 2.0])
        np.testing.assert_array_equal(h5.attrs["affine"], affine)
        np.testing.assert_array_equal(h5.attrs["patch_size"], PATCH)
        assert h5.attrs["n_patches"] == 6
        assert h5.attrs["plan_hash"] == PLAN["hash"]
        for i, origin in enumerate(h5["origin"][:]):
            np.testing.assert_array_equal(
                h5["image"][i, 0], extract(image, origin, PATCH, float(image.min()))
            )
            np.testing.assert_array_equal(h5["label"][i], extract(label, origin, PATCH, 0))


def test_store_oversamples_foreground(tmp_path):
    store(tmp_path / "s.h5", n_patches=10)

    with h5py.File(tmp_path / "s.h5", "r") as h5:
        labelled_centres = (h5["label"][:, 4, 4, 4] > 0).sum()
    assert labelled_centres >= 5


# --------------------------------------------------------------------------------------------
# PatchDataset


@pytest.fixture
def two_stores(tmp_path):
    paths = [tmp_path / "sub-01.h5", tmp_path / "sub-02.h5"]
    store(paths[0], "sub-01", n_patches=3, seed=1)
    store(paths[1], "sub-02", n_patches=5, seed=2)
    return paths


def test_dataset_indexes_all_stores_as_one(two_stores):
    dataset = PatchDataset(two_stores, plan_hash=PLAN["hash"])

    assert len(dataset) == 8
    assert dataset.subjects() == ["sub-01", "sub-02"]
    with h5py.File(two_stores[1], "r") as h5:
        expected_image, expected_label = h5["image"][0], h5["label"][0]
    image, label = dataset[3]  # the first patch of the second store
    np.testing.assert_array_equal(image.numpy(), expected_image)
    np.testing.assert_array_equal(label.numpy()[0], expected_label)


def test_dataset_items_are_float_images_and_integer_labels(two_stores):
    image, label = PatchDataset(two_stores)[7]

    assert image.dtype == torch.float32 and image.shape == (1, *PATCH)
    assert label.dtype == torch.int64 and label.shape == (1, *PATCH)


def test_dataset_rejects_a_store_of_another_plan(two_stores):
    with pytest.raises(CohortsegError, match="sub-01.h5.*0123456789abcdef.*rerun patches"):
        PatchDataset(two_stores, plan_hash="fedcba9876543210")


@pytest.mark.parametrize("kept", [0.33, 0.99])
def test_dataset_rejects_a_truncated_store(two_stores, kept):
    raw = two_stores[1].read_bytes()
    two_stores[1].write_bytes(raw[: int(len(raw) * kept)])

    with pytest.raises(CohortsegError, match="sub-02.h5"):
        PatchDataset(two_stores)


def test_dataset_rejects_a_store_that_is_not_hdf5(two_stores):
    two_stores[0].write_bytes(b"not an HDF5 file" * 100)

    with pytest.raises(CohortsegError, match="sub-01.h5"):
        PatchDataset(two_stores)


def test_dataset_rejects_a_store_without_patches(tmp_path):
    with h5py.File(tmp_path / "empty.h5", "w") as h5:
        h5.attrs["plan_hash"] = PLAN["hash"]

    with pytest.raises(CohortsegError, match="empty.h5"):
        PatchDataset([tmp_path / "empty.h5"])


def test_dataset_works_in_a_dataloader_with_workers(two_stores):
    dataset = PatchDataset(two_stores, plan_hash=PLAN["hash"])
    expected = [dataset[i] for i in range(len(dataset))]  # opens handles in the parent first

    loader = DataLoader(dataset, batch_size=3, shuffle=False, num_workers=2)
    batches = list(loader)

    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert images.shape == (8, 1, *PATCH) and labels.shape == (8, 1, *PATCH)
    torch.testing.assert_close(images, torch.stack([e[0] for e in expected]))
    torch.testing.assert_close(labels, torch.stack([e[1] for e in expected]))


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 40)] * 3),
    patch=st.tuples(*[st.integers(1, 24)] * 3),
    n_labels=st.integers(0, 4),
    fraction=st.floats(0, 1),
    seed=st.integers(0, 2**16),
)
def test_random_layouts_never_crash_the_sampler_and_patches_cover_the_volume(
    shape, patch, n_labels, fraction, seed
):
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for c in range(1, n_labels + 1):  # a random box per class, possibly a single voxel
        lo = [int(rng.integers(0, n)) for n in shape]
        hi = [int(rng.integers(a, n)) + 1 for a, n in zip(lo, shape, strict=True)]
        label[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = c
    origins = sample_origins(label, patch, 12, fraction, np.random.default_rng(seed))
    assert origins.shape == (12, 3)
    for origin in origins:
        for o, p, n in zip(origin, patch, shape, strict=True):
            if n >= p:  # the patch lies inside the volume
                assert 0 <= o and o + p <= n
            else:  # the volume lies inside the patch, centred
                assert o == (n - p) // 2


def test_2d_patches_are_one_slice_and_centred_on_labels_in_plane():
    label = np.zeros((40, 30, 1), np.uint8)
    label[30:34, 5:8, 0] = 2
    origins = sample_origins(label, [16, 16, 1], 20, 1.0, np.random.default_rng(0))

    assert (origins[:, 2] == 0).all()
    for origin in origins:
        patch = extract(label, origin, [16, 16, 1], 0)
        assert patch.shape == (16, 16, 1) and (patch == 2).any()
