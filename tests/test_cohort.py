"""Tests for cohortseg.cohort: the sample sheet, the demo cohort, shards and phantoms."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from cohortseg.cohort import (
    Subject,
    demo_phantom,
    demo_subjects,
    read_sample_sheet,
    shards,
    write_demo_subject,
)
from cohortseg.errors import CohortsegError
from cohortseg.io import load_nifti
from cohortseg.preprocess import spacing_of

HEADER = ("subject", "image", "label", "split")


def write_sheet(path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...] = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(row) + "\n" for row in [header, *rows]))
    return path


# --------------------------------------------------------------------------------------------
# read_sample_sheet


def test_sample_sheet_paths_are_relative_to_the_sheet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "..")  # the working directory must not matter
    sheet = write_sheet(
        tmp_path / "sheets" / "cohort.tsv",
        [
            ("sub-01", "../images/sub-01.nii.gz", "../labels/sub-01.nii.gz", "train"),
            ("sub-02", "/data/abs/sub-02.nii.gz", "", "infer"),
        ],
    )

    subjects = read_sample_sheet(sheet)

    assert subjects == [
        Subject(
            "sub-01",
            str(tmp_path / "images" / "sub-01.nii.gz"),
            str(tmp_path / "labels" / "sub-01.nii.gz"),
            "train",
        ),
        Subject("sub-02", "/data/abs/sub-02.nii.gz", None, "infer"),
    ]


@pytest.mark.parametrize("split", ["test", "infer"])
def test_empty_label_means_unlabelled(tmp_path, split):
    sheet = write_sheet(tmp_path / "s.tsv", [("sub-01", "a.nii.gz", "  ", split)])

    (subject,) = read_sample_sheet(sheet)

    assert subject.label is None
    assert subject.split == split


def test_windows_line_endings_are_read(tmp_path):
    sheet = tmp_path / "s.tsv"
    sheet.write_bytes(b"subject\timage\tlabel\tsplit\r\nsub-01\ta.nii.gz\t\ttest\r\n")

    assert read_sample_sheet(sheet) == [Subject("sub-01", str(tmp_path / "a.nii.gz"), None, "test")]


def test_missing_sheet_names_the_config_key(tmp_path):
    with pytest.raises(CohortsegError, match="samples"):
        read_sample_sheet(tmp_path / "nope.tsv")


def test_missing_column_is_named(tmp_path):
    sheet = write_sheet(
        tmp_path / "s.tsv", [("sub-01", "a.nii.gz", "train")], header=("subject", "image", "split")
    )

    with pytest.raises(CohortsegError, match="missing column.*label"):
        read_sample_sheet(sheet)


def test_bad_split_names_subject_and_split(tmp_path):
    sheet = write_sheet(
        tmp_path / "s.tsv",
        [("sub-01", "a.nii.gz", "la.nii.gz", "train"), ("sub-02", "b.nii.gz", "", "training")],
    )

    with pytest.raises(CohortsegError, match="line 3 \\(sub-02\\).*'training'"):
        read_sample_sheet(sheet)


@pytest.mark.parametrize("sid, problem", [("", "empty subject id"), ("a/b", "bad subject id")])
def test_unusable_subject_id_is_an_error(tmp_path, sid, problem):
    sheet = write_sheet(tmp_path / "s.tsv", [(sid, "a.nii.gz", "", "test")])

    with pytest.raises(CohortsegError, match=f"line 2: {problem}"):
        read_sample_sheet(sheet)


def test_empty_image_names_subject_and_column(tmp_path):
    sheet = write_sheet(tmp_path / "s.tsv", [("sub-04", "", "", "test")])

    with pytest.raises(CohortsegError, match="sub-04.*image"):
        read_sample_sheet(sheet)


@pytest.mark.parametrize("split", ["train", "val"])
def test_labelled_split_without_label_names_subject(tmp_path, split):
    sheet = write_sheet(tmp_path / "s.tsv", [("sub-09", "a.nii.gz", "", split)])

    with pytest.raises(CohortsegError, match=f"sub-09.*{split} needs a label"):
        read_sample_sheet(sheet)


def test_duplicate_subject_id_is_named(tmp_path):
    sheet = write_sheet(
        tmp_path / "s.tsv",
        [
            ("sub-01", "a.nii.gz", "la.nii.gz", "train"),
            ("sub-01", "b.nii.gz", "lb.nii.gz", "val"),
        ],
    )

    with pytest.raises(CohortsegError, match="sub-01: duplicate subject id"):
        read_sample_sheet(sheet)


def test_two_subjects_sharing_one_image_are_named(tmp_path):
    # the same file spelled two ways must still be caught
    sheet = write_sheet(
        tmp_path / "s.tsv",
        [
            ("sub-01", "img/a.nii.gz", "la.nii.gz", "train"),
            ("sub-02", "./img/../img/a.nii.gz", "", "test"),
        ],
    )

    with pytest.raises(CohortsegError) as info:
        read_sample_sheet(sheet)

    message = str(info.value)
    assert message.startswith("sub-02: image")
    assert "sub-01" in message and "a.nii.gz" in message


# --------------------------------------------------------------------------------------------
# demo_subjects


DEMO = {"subjects_per_split": {"train": 3, "val": 1, "test": 2, "infer": 2}}


def test_demo_subjects_ids_and_splits_follow_the_config():
    subjects = demo_subjects(DEMO, root="res/demo")

    assert [s.subject for s in subjects] == [f"demo-{i:03d}" for i in range(1, 9)]
    assert [s.split for s in subjects] == ["train"] * 3 + ["val"] + ["test"] * 2 + ["infer"] * 2
    assert subjects[0].image == "res/demo/images/demo-001.nii.gz"
    assert subjects[0].label == "res/demo/labels/demo-001.nii.gz"


def test_demo_infer_subjects_have_no_label():
    subjects = demo_subjects(DEMO)

    assert [s.label is None for s in subjects] == [s.split == "infer" for s in subjects]


def test_demo_subjects_are_a_pure_function_of_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = demo_subjects(dict(DEMO, seed=0, shape=[8, 8, 8]))

    again = demo_subjects(dict(DEMO, seed=5, shape=[40, 40, 40]))

    assert first == again
    assert os.listdir(tmp_path) == []  # nothing written
    assert demo_subjects({"subjects_per_split": {"train": 1}}) == [first[0]]


# --------------------------------------------------------------------------------------------
# shards


@pytest.mark.parametrize("n, shard_size", [(1, 4), (4, 4), (9, 4), (10, 3), (7, 1), (3, 10)])
def test_shards_cover_every_subject_once_in_order(n, shard_size):
    ids = [f"s{i:02d}" for i in range(n)]

    result = shards(ids, shard_size)

    assert len(result) == math.ceil(n / shard_size)
    assert [s for shard in result for s in shard] == ids
    assert all(len(shard) == shard_size for shard in result[:-1])


def test_shards_of_no_subjects_is_empty():
    assert shards([], 4) == []


def test_appending_subjects_leaves_earlier_shards_unchanged():
    before = shards([f"s{i:02d}" for i in range(10)], 4)

    after = shards([f"s{i:02d}" for i in range(15)], 4)

    assert after[:2] == before[:2]
    assert after[2][: len(before[2])] == before[2]


def test_shard_size_below_one_is_an_error():
    with pytest.raises(CohortsegError, match="shard_size"):
        shards(["a", "b"], 0)


# --------------------------------------------------------------------------------------------
# demo_phantom


SHAPE = (32, 30, 20)
SPACING = (1.2, 1.2, 3.0)


def test_phantom_is_deterministic_for_a_seed():
    image_a, label_a, affine_a = demo_phantom(SHAPE, SPACING, seed=7)
    image_b, label_b, affine_b = demo_phantom(SHAPE, SPACING, seed=7)

    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(label_a, label_b)
    np.testing.assert_array_equal(affine_a, affine_b)


def test_phantom_types_shape_and_classes():
    image, label, affine = demo_phantom(SHAPE, SPACING, seed=0)

    assert image.dtype == np.int16 and label.dtype == np.uint8
    assert image.shape == label.shape == SHAPE
    assert affine.shape == (4, 4)
    assert set(np.unique(label)) == {0, 1, 2, 3}


@pytest.mark.parametrize("seed", range(5))
def test_phantom_affine_is_oblique_with_spacing_near_the_requested(seed):
    _, _, affine = demo_phantom(SHAPE, SPACING, seed=seed)

    spacing = spacing_of(affine)
    np.testing.assert_array_less(np.abs(spacing / SPACING - 1), 0.1 + 1e-9)
    directions = affine[:3, :3] / spacing
    off_diagonal = directions - np.diag(np.diag(directions))
    assert np.abs(off_diagonal).max() > 1e-3
    np.testing.assert_array_equal(affine[3], [0, 0, 0, 1])


def test_different_subjects_get_different_affines():
    affines = [demo_phantom(SHAPE, SPACING, seed=s)[2] for s in range(4)]

    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.allclose(affines[i][:3, :3], affines[j][:3, :3])


def test_written_demo_subjects_differ_in_geometry(tmp_path):
    demo = {"shape": [16, 16, 12], "spacing_mm": [2.0, 2.0, 3.0], "seed": 0}
    subjects = demo_subjects({"subjects_per_split": {"train": 2}}, root=str(tmp_path))

    for s in subjects:
        write_demo_subject(s, demo)

    (img1, aff1), (img2, aff2) = (load_nifti(s.image, s.subject) for s in subjects)
    label1, label_aff1 = load_nifti(subjects[0].label, subjects[0].subject, dtype=np.uint8)
    assert img1.shape == img2.shape == label1.shape == (16, 16, 12)
    np.testing.assert_allclose(label_aff1, aff1)
    assert not np.allclose(aff1, aff2)


@pytest.mark.parametrize("seed", range(3))
def test_phantom_structures_have_distinct_contrast(seed):
    image, label, _ = demo_phantom(SHAPE, SPACING, seed=seed)

    means = [float(image[label == c].mean()) for c in (1, 2, 3)]

    gaps = [abs(means[i] - means[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 100, means


def test_phantom_works_for_a_non_cubic_shape():
    shape = (40, 24, 14)

    image, label, affine = demo_phantom(shape, (1.0, 1.5, 2.5), seed=3)

    assert image.shape == label.shape == shape
    assert set(np.unique(label)) == {0, 1, 2, 3}
    np.testing.assert_array_less(np.abs(spacing_of(affine) / (1.0, 1.5, 2.5) - 1), 0.1 + 1e-9)
