"""Tests for cohortseg.core.cohort: the sample sheet, the demo cohort's subjects, shards."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from cohortseg.core.cohort import (
    Subject,
    demo_subjects,
    read_sample_sheet,
    shards,
    sheet_row,
    sheet_row_kinds,
)
from cohortseg.core.errors import CohortsegError

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


@pytest.mark.parametrize(
    "sheet_dir, image",
    [
        ("sheets", "images/./a.nii.gz"),
        ("sheets", "images//a.nii.gz"),
        ("sheets", "./a.nii.gz"),
        (".", "images/a.nii.gz"),
        (".", "../a.nii.gz"),
        ("sheets", "/abs/../data/a.nii.gz"),
        ("sheets", "images/a.nii.gz"),
    ],
)
def test_sheet_paths_are_normalised_as_os_path_normpath_does(
    tmp_path, monkeypatch, sheet_dir, image
):
    monkeypatch.chdir(tmp_path)
    sheet = write_sheet(Path(sheet_dir) / "cohort.tsv", [("sub-01", image, "", "infer")])
    (subject,) = read_sample_sheet(sheet)
    assert subject.image == os.path.normpath(os.path.join(sheet_dir, image))


def test_one_row_of_each_kind_is_checked_against_the_sheet_schema(tmp_path):
    """The rows read_sample_sheet accepts are valid for workflow/schemas/samples.schema.yaml,
    and what it refuses the schema refuses too; one row per kind is what the workflow checks."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(
        (Path(__file__).parents[2] / "workflow/schemas/samples.schema.yaml").read_text()
    )
    header = (*HEADER, "site", "spacing_mm")
    rows = [(f"s{k}", f"s{k}.nii.gz", f"l{k}.nii.gz", "train", "a", "") for k in range(50)]
    rows += [(f"t{k}", f"t{k}.png", "", "infer", "b", "0.5") for k in range(50)]
    subjects = read_sample_sheet(write_sheet(tmp_path / "s.tsv", rows, header))
    kinds = sheet_row_kinds(subjects)
    assert [k["subject"] for k in kinds] == ["s0", "t0"]
    assert kinds[1]["spacing_mm"] == "0.5,0.5" and kinds[1]["site"] == "b"
    for row in map(sheet_row, subjects):
        jsonschema.validate(row, schema)
    refused = [
        {"subject": "a/b", "image": "x", "label": "", "split": "infer"},
        {"subject": ".a", "image": "x", "label": "", "split": "infer"},
        {"subject": "a", "image": "", "label": "", "split": "infer"},
        {"subject": "a", "image": "x", "label": "", "split": "training"},
        {"subject": "a", "image": "x", "label": "", "split": "train"},  # train needs a label
        {"subject": "a", "image": "x", "label": "", "split": "infer", "site": "-x"},
    ]
    for row in refused:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(row, schema)


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


DEMO = {"subjects_per_split": {"train": 3, "val": 1, "test": 2, "infer": 2}, "format": "nifti"}


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
    assert demo_subjects({"subjects_per_split": {"train": 1}, "format": "nifti"}) == [first[0]]


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
