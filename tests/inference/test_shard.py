"""Shard inference: outputs on each subject's native grid, the same bytes however subjects are
sharded or how many workers there are; one bad subject fails alone; bounded read-ahead."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import cohortseg.inference.shard as infer
from cohortseg.core.errors import CohortsegError
from cohortseg.core.failures import check_shard
from cohortseg.core.io import read_tsv
from cohortseg.core.redact import REDACT_ENV
from cohortseg.inference.predictor import mirror_flips, predict_with_tta
from cohortseg.inference.shard import (
    Prediction,
    ShardItem,
    cpu_compute_threads,
    segment_items,
    segment_shard,
    write_shard_manifest,
    write_uncertainty_table,
)
from cohortseg.networks.build import build_network
from cohortseg.preprocessing.prepare import CanonicalImage
from tests.conftest import default_config

MODEL = {"name": "UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


@pytest.fixture
def checkpoint(tmp_path, small_plan) -> str:
    torch.manual_seed(0)
    net = build_network(MODEL, 4)
    path = tmp_path / "model.pt"
    torch.save({"model_state": net.state_dict(), "model_config": MODEL, "plan": small_plan}, path)
    return str(path)


INFERENCE = {**default_config()["inference"], "overlap": 0.25, "device": "cpu"}


def test_segmentations_have_the_native_shape_and_affine(tmp_path, phantom_files, checkpoint):
    items = [ShardItem(s, i, str(tmp_path / "out" / f"{s}.nii.gz")) for s, i, _ in phantom_files]
    assert segment_shard(checkpoint, items, INFERENCE) == []
    for item in items:
        src, out = nib.load(item.image), nib.load(item.output)
        assert out.shape == src.shape
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-5)
        assert out.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2, 3}


def test_a_missing_image_fails_only_that_subject(tmp_path, phantom_files, checkpoint):
    items = [ShardItem(s, i, str(tmp_path / f"{s}.nii.gz")) for s, i, _ in phantom_files]
    items.insert(
        1,
        ShardItem(
            "sub-missing", str(tmp_path / "nope.nii.gz"), str(tmp_path / "sub-missing.nii.gz")
        ),
    )
    failures = segment_shard(checkpoint, items, INFERENCE)
    assert [f.subject for f in failures] == ["sub-missing"]
    assert all((tmp_path / f"{s}.nii.gz").exists() for s, _, _ in phantom_files)
    assert not (tmp_path / "sub-missing.nii.gz").exists()
    with pytest.raises(CohortsegError, match="sub-missing.*nope.nii.gz.*does not exist"):
        check_shard(failures)


def test_outputs_are_byte_identical_across_worker_counts_and_shard_splits(
    tmp_path, phantom_files, checkpoint
):
    def items(name: str) -> list[ShardItem]:
        return [ShardItem(s, i, str(tmp_path / name / f"{s}.nii.gz")) for s, i, _ in phantom_files]

    one = items("one_shard")
    assert segment_shard(checkpoint, one, {**INFERENCE, "num_workers": 1, "queue_size": 1}) == []
    split = items("two_shards")
    settings = {**INFERENCE, "num_workers": 3, "queue_size": 2}
    assert segment_shard(checkpoint, split[1:], settings) == []
    assert segment_shard(checkpoint, split[:1], settings) == []
    for a, b in zip(one, split, strict=True):
        data = Path(a.output).read_bytes()
        assert data == Path(b.output).read_bytes(), a.subject
        # gzip header without a file name (the temporary one would differ) and with mtime 0
        assert data[:2] == b"\x1f\x8b" and not data[3] & 0x08 and data[4:8] == bytes(4)


def test_tta_and_uncertainty_maps_are_byte_identical_across_worker_counts_and_shard_splits(
    tmp_path, phantom_files, checkpoint
):
    settings = {**INFERENCE, "tta": "mirror", "uncertainty_maps": True}

    def items(name: str) -> list[ShardItem]:
        out = tmp_path / name
        return [
            ShardItem(s, i, str(out / f"{s}.nii.gz"), str(out / f"{s}_uncertainty.nii.gz"))
            for s, i, _ in phantom_files
        ]

    one = items("one_shard")
    assert segment_shard(checkpoint, one, {**settings, "num_workers": 1, "queue_size": 1}) == []
    split = items("two_shards")
    many = {**settings, "num_workers": 3, "queue_size": 2}
    assert segment_shard(checkpoint, split[:2], many) == []
    assert segment_shard(checkpoint, split[2:], many) == []
    write_uncertainty_table(str(tmp_path / "one.tsv"), one, ["organ", "shell", "tube"])
    write_uncertainty_table(str(tmp_path / "a.tsv"), split[:2], ["organ", "shell", "tube"])
    write_uncertainty_table(str(tmp_path / "b.tsv"), split[2:], ["organ", "shell", "tube"])
    for a, b in zip(one, split, strict=True):
        assert Path(a.output).read_bytes() == Path(b.output).read_bytes(), a.subject
        assert Path(a.uncertainty_map).read_bytes() == Path(b.uncertainty_map).read_bytes()
        assert a.uncertainty == b.uncertainty
        src, umap = nib.load(a.image), nib.load(a.uncertainty_map)
        assert umap.shape == src.shape and umap.get_data_dtype() == np.float32
        np.testing.assert_allclose(umap.affine, src.affine, atol=1e-5)
        values = np.asarray(umap.dataobj)
        assert values.min() >= 0 and values.max() <= 1
    table = read_tsv(tmp_path / "one.tsv")

    def without_paths(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "uncertainty_map"} for r in rows]

    split_table = read_tsv(tmp_path / "a.tsv") + read_tsv(tmp_path / "b.tsv")
    assert without_paths(split_table) == without_paths(table)
    for row, item in zip(table, one, strict=True):
        assert row["sha256"] == hashlib.sha256(Path(item.uncertainty_map).read_bytes()).hexdigest()
        for c in ("organ", "shell", "tube"):
            assert row[f"tta_disagreement_{c}"] != ""  # 8 members' disagreement
            assert row[f"uncertainty_{c}"] == "nan" or 0 <= float(row[f"uncertainty_{c}"]) <= 1


def test_without_tta_there_is_no_member_disagreement(tmp_path, phantom_files, checkpoint):
    items = [ShardItem(s, i, str(tmp_path / f"{s}.nii.gz")) for s, i, _ in phantom_files]
    assert segment_shard(checkpoint, items, INFERENCE) == []
    assert all(math.isnan(i.uncertainty["tta_disagreement_organ"]) for i in items)
    write_uncertainty_table(str(tmp_path / "u.tsv"), items, ["organ", "shell", "tube"])
    assert "sha256" not in read_tsv(tmp_path / "u.tsv")[0]


def test_mirror_tta_averages_8_mirror_images_so_a_symmetric_input_gives_symmetric_output():
    assert mirror_flips("none") == [()]
    flips = mirror_flips("mirror")
    assert len(flips) == len(set(flips)) == 8 and () in flips and (0, 1, 2) in flips

    class Ramp(torch.nn.Module):
        """Logits that depend on position, not on the image: not mirror-symmetric at all."""

        def forward(self, x):
            ramp = torch.linspace(0, 3, x.shape[2]).view(1, 1, -1, 1, 1)
            ramp = ramp + torch.linspace(0, 1, x.shape[4]).view(1, 1, 1, 1, -1)
            return torch.cat([ramp.expand_as(x), torch.zeros_like(x)], dim=1)

    image = torch.ones(1, 8, 6, 4)  # symmetric under every mirror
    plan = {"patch_size": [8, 6, 4]}
    plain, members = predict_with_tta(Ramp(), image, plan, {**INFERENCE, "tta": "none"})
    assert members == []
    assert not torch.allclose(plain, plain.flip(1))
    mirrored, members = predict_with_tta(Ramp(), image, plan, {**INFERENCE, "tta": "mirror"})
    assert len(members) == 8 and members[0].dtype == torch.uint8
    for dim in (1, 2, 3):
        torch.testing.assert_close(mirrored, mirrored.flip(dim))
    torch.testing.assert_close(mirrored.sum(dim=0), torch.ones(8, 6, 4))


def test_a_corrupt_image_in_the_middle_fails_only_that_subject(
    tmp_path, phantom_files, checkpoint, caplog
):
    caplog.set_level(logging.INFO, logger="cohortseg.inference.shard")
    whole = Path(phantom_files[0][1]).read_bytes()
    corrupt = tmp_path / "truncated.nii.gz"
    corrupt.write_bytes(whole[: len(whole) // 2])  # an interrupted copy: the header reads fine
    out = tmp_path / "out"
    items = [ShardItem(s, i, str(out / f"{s}.nii.gz")) for s, i, _ in phantom_files]
    items.insert(1, ShardItem("sub-corrupt", str(corrupt), str(out / "sub-corrupt.nii.gz")))
    failures = segment_shard(checkpoint, items, {**INFERENCE, "num_workers": 2, "queue_size": 2})
    assert [f.subject for f in failures] == ["sub-corrupt"]
    # every other subject is written, and nothing else: no partial or temporary file
    assert sorted(p.name for p in out.iterdir()) == [f"{s}.nii.gz" for s, _, _ in phantom_files]
    for item in items[:1] + items[2:]:
        assert nib.load(item.output).shape == nib.load(item.image).shape
    # progress: one line per subject with the throughput and the time left
    progress = [r.getMessage() for r in caplog.records if "left]" in r.getMessage()]
    subjects = sorted(line.split(":")[0] for line in progress)  # writers finish in any order
    assert subjects == ["sub-00", "sub-01", "sub-02", "sub-corrupt"]
    assert all("volumes/s, about" in line for line in progress)
    with pytest.raises(
        CohortsegError, match="1 subject.*\n.*sub-corrupt.*truncated.nii.gz.*cannot read"
    ):
        check_shard(failures)


def test_readers_run_at_most_queue_size_volumes_ahead_and_writers_queue_at_most_as_many(
    monkeypatch, tmp_path
):
    queue_size, n = 3, 12
    events: list[tuple[str, int]] = []
    lock = threading.Lock()

    def record(kind: str, index: int) -> None:
        with lock:
            events.append((kind, index))

    def read(item: ShardItem, pin_memory: bool = False) -> CanonicalImage:
        record("read", int(item.subject))
        eye = np.eye(4)
        data = np.full((1, 1, 1), int(item.subject), np.float32)
        return CanonicalImage(data, eye, np.array([[0, 1], [1, 1], [2, 1]]), (1, 1, 1), eye)

    def segment(net, image, plan, inference, device):
        record("segment", int(image.data[0, 0, 0]))
        time.sleep(0.005)
        return Prediction(np.zeros((1, 1, 1), np.uint8), None)

    def write(segmented) -> None:
        time.sleep(0.02)  # writers slower than the device: their queue fills up
        record("written", int(segmented.item.subject))

    monkeypatch.setattr(infer, "read_volume", read)
    monkeypatch.setattr(infer, "segment_canonical", segment)
    monkeypatch.setattr(infer, "write_labels", write)
    items = [ShardItem(str(k), f"{k}.nii.gz", str(tmp_path / f"{k}.nii.gz")) for k in range(n)]
    settings = {"num_workers": 2, "queue_size": queue_size}
    assert segment_items(None, {}, items, settings, torch.device("cpu")) == []

    started = written = 0
    read_ahead, write_backlog = [], []
    for kind, index in events:
        if kind == "read":
            read_ahead.append(index - started)  # volumes ahead of the one the device is on
        elif kind == "segment":
            assert index == started  # the device takes volumes in order
            write_backlog.append(started - written)  # label maps not yet written
            started += 1
        else:
            written += 1
    assert started == written == n
    assert 1 <= max(read_ahead) <= queue_size  # reading ahead, but never further
    assert 1 <= max(write_backlog) <= queue_size  # writing behind, but never further


def test_the_manifest_names_every_segmentation_with_its_checksum(
    tmp_path, phantom_files, checkpoint
):
    items = [ShardItem(s, i, str(tmp_path / f"{s}.nii.gz")) for s, i, _ in phantom_files]
    assert segment_shard(checkpoint, items, INFERENCE) == []
    manifest = tmp_path / "shard.tsv"
    write_shard_manifest(str(manifest), items)
    rows = read_tsv(manifest)
    assert [r["subject"] for r in rows] == [s for s, _, _ in phantom_files]
    for row, item in zip(rows, items, strict=True):
        assert row["segmentation"] == item.output
        assert row["sha256"] == hashlib.sha256(Path(item.output).read_bytes()).hexdigest()


def test_a_redacted_run_logs_an_unreadable_image_without_its_path(
    tmp_path, phantom_files, checkpoint, caplog, monkeypatch
):
    monkeypatch.setenv(REDACT_ENV, "1")
    caplog.set_level(logging.INFO, logger="cohortseg.inference.shard")
    secret = tmp_path / "Doe_Jane_1950" / "scan.nii.gz"
    secret.parent.mkdir()
    secret.write_bytes(Path(phantom_files[0][1]).read_bytes()[:300])  # a truncated header
    item = ShardItem("sub-x", str(secret), str(tmp_path / "sub-x.nii.gz"))
    failures = segment_shard(checkpoint, [item], INFERENCE)
    assert [f.subject for f in failures] == ["sub-x"]
    logged = "\n".join(caplog.text.splitlines()) + str(failures[0])
    assert "sub-x" in logged and "Doe_Jane" not in logged


def test_cpu_inference_leaves_one_core_to_the_readers_and_writers():
    assert cpu_compute_threads({"OMP_NUM_THREADS": "8"}) == 7
    assert cpu_compute_threads({"OMP_NUM_THREADS": "2"}) == 1
    assert cpu_compute_threads({"OMP_NUM_THREADS": "1"}) == 1
    assert cpu_compute_threads({}) == max(1, (os.cpu_count() or 1) - 1)


def test_mirror_tta_of_a_2d_image_mirrors_in_plane_only():
    flips = mirror_flips("mirror", (0, 1))
    assert sorted(flips) == [(), (0,), (0, 1), (1,)]

    class Count(torch.nn.Module):
        calls = 0

        def forward(self, x):
            Count.calls += 1
            return torch.cat([x, -x], dim=1)

    image = torch.randn(1, 12, 10, 1)
    plan = {"patch_size": [12, 10, 1]}
    probs, members = predict_with_tta(
        Count(), image, plan, {"tta": "mirror", "sw_batch_size": 1, "overlap": 0.5}
    )
    assert probs.shape == (2, 12, 10, 1) and len(members) == 4
