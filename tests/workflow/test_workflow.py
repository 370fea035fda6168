"""Tests for cohortseg.workflow.cohort: the workflow's logic as pure functions of config and
environment (config typing, the cohort and its shards, SLURM resources, launchers, markers)."""

from __future__ import annotations

import copy
import json
import math
import os
import time

import pytest

from cohortseg.core.cohort import Subject, auto_shard_size, resolve_shard_size, subject_site
from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import write_tsv
from cohortseg.core.pseudonyms import pseudonym
from cohortseg.workflow.cohort import (
    job_subjects,
    plan_subjects,
    plan_subjects_by_site,
    robustness_subjects,
    site_stage_outputs,
    stage_outputs,
    training_inputs,
    training_sites,
    workflow_cohort,
)
from cohortseg.workflow.config import (
    coerce_to_schema,
    cohort_config,
    coordinator_plan_config,
    is_federated,
    load_schema,
    load_yaml,
    plan_config,
    plan_input,
    training_config,
)
from cohortseg.workflow.markers import (
    files_digest,
    made_by_rules,
    rerun_marker,
    tracked,
    write_marker,
)
from cohortseg.workflow.paths import (
    PLAN,
    REVIEW_DATASTORE,
    converted_paths,
    inference_manifest_path,
    mesh_paths,
    meshes_manifest_path,
    metrics_shard_path,
    patch_manifest_path,
    patch_store_path,
    preprocessed_manifest_path,
    preprocessed_paths,
    segmentation_path,
    site_fingerprint_path,
    site_of_product,
    stats_shard_path,
    supernode_paths,
    validation_shard_path,
)
from cohortseg.workflow.resources import (
    cluster_resources,
    rule_threads,
    train_launcher,
    train_tasks,
)
from tests.conftest import REPO, default_config

SCHEMA = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")


def cluster(**rules) -> dict:
    base = copy.deepcopy(default_config()["cluster"])
    base["rules"].update(rules)
    return base


# ------------------------------------------------------------------------------ config typing


def test_command_line_strings_are_typed_as_the_schema_says():
    config = {
        "inference": "{sw_batch_size: 8, overlap: '0.25'}",
        "samples": "2024.tsv",
        "shard_size": "16",
    }
    coerce_to_schema(config, SCHEMA)
    assert config["inference"] == {"sw_batch_size": 8, "overlap": 0.25}
    assert config["samples"] == "2024.tsv"  # a string where the schema wants one
    assert config["shard_size"] == 16
    assert coerce_to_schema({"shard_size": "auto"}, SCHEMA) == {"shard_size": "auto"}


def test_the_default_config_is_valid_for_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(default_config(), SCHEMA)


# ------------------------------------------------------------------------------ the cohort


def demo_config(**changes) -> dict:
    config = default_config()
    config["demo"]["subjects_per_split"] = {"train": 3, "val": 1, "test": 2, "infer": 3}
    config["shard_size"] = 4
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    return config


@pytest.mark.parametrize(
    ("n", "size"), [(0, 1), (1, 1), (2, 2), (16, 4), (17, 8), (1000, 32), (50_000, 256)]
)
def test_auto_shard_size_is_the_power_of_two_at_or_above_the_square_root(n, size):
    assert auto_shard_size(n) == size
    assert resolve_shard_size("auto", n) == size
    assert resolve_shard_size(7, n) == 7


def test_auto_sharding_gives_a_handful_for_the_demo_and_a_few_hundred_for_50000():
    assert math.ceil(16 / auto_shard_size(16)) == 4
    assert 100 <= math.ceil(50_000 / auto_shard_size(50_000)) <= 400


def test_a_shard_size_below_one_is_a_clear_error():
    with pytest.raises(CohortsegError, match="shard_size"):
        resolve_shard_size(0, 10)


def test_every_stage_shards_the_one_partition_of_the_cohort():
    cohort = workflow_cohort(demo_config(inference={"splits": ["test", "infer"]}))
    assert cohort.shards == {
        "00000": ["demo-001", "demo-002", "demo-003", "demo-004"],
        "00001": ["demo-005", "demo-006", "demo-007", "demo-008"],
        "00002": ["demo-009"],
    }
    assert cohort.stage_shards("validate") == cohort.shards
    assert cohort.stage_shards("preprocess") == {
        "00000": ["demo-001", "demo-002", "demo-003", "demo-004"]
    }
    assert cohort.stage_shards("patches") == {"00000": ["demo-001", "demo-002", "demo-003"]}
    assert cohort.stage_shards("infer") == {
        "00001": ["demo-005", "demo-006", "demo-007", "demo-008"],
        "00002": ["demo-009"],
    }
    assert cohort.split_ids("train") == ["demo-001", "demo-002", "demo-003"]


def test_a_job_leaves_out_what_its_validation_shard_found_invalid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cohort = workflow_cohort(demo_config())
    table = tmp_path / validation_shard_path("00000")
    table.parent.mkdir(parents=True)
    table.write_text("subject\tkind\tfile\tproblem\ndemo-002\tlabel\tx\tbroken\n")
    ids = [s.subject for s in job_subjects(cohort, "patches", "00000", on_invalid="skip")]
    assert ids == ["demo-001", "demo-003"]
    ids = [s.subject for s in job_subjects(cohort, "patches", "00000", on_invalid="fail")]
    assert ids == ["demo-001", "demo-002", "demo-003"]
    everyone = job_subjects(cohort, "validate", "00000", on_invalid="skip")
    assert len(everyone) == 4  # validation itself sees every member
    with pytest.raises(CohortsegError, match="shard 00009"):
        job_subjects(cohort, "infer", "00009", on_invalid="skip")


def test_corrections_from_review_are_labelled_subjects_of_every_job(tmp_path, monkeypatch):
    """A correction dropped into corrections.dir or the review datastore's labels/final/ makes
    its subject labelled (an infer subject joins train) in the cohort every job rebuilds; a
    plan kept from a parent model leaves corrected subjects out."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corrections").mkdir()
    (tmp_path / "corrections" / "demo-009.seg.nrrd").write_bytes(b"")
    final = tmp_path / REVIEW_DATASTORE / "labels" / "final"
    final.mkdir(parents=True)
    (final / "demo-004.nii.gz").write_bytes(b"")
    cohort = workflow_cohort(cohort_config(demo_config()))
    assert cohort.corrections == {
        "demo-009": "corrections/demo-009.seg.nrrd",
        "demo-004": f"{final.relative_to(tmp_path)}/demo-004.nii.gz",
    }
    assert cohort.by_id["demo-009"].split == "train"
    assert cohort.by_id["demo-009"].label == "results/corrections/demo-009.nii.gz"
    assert cohort.by_id["demo-004"].split == "val"  # labelled before: its split is kept
    assert "demo-009" in cohort.stage_shards("patches")["00002"]
    assert "demo-009" in plan_subjects(cohort, fine_tuning=False)
    assert "demo-009" not in plan_subjects(cohort, fine_tuning=True)
    # a real cohort's corrected label is tracked before the rule that makes it has run
    assert tracked(["results/corrections/demo-009.nii.gz"], demo=False) == [
        "results/corrections/demo-009.nii.gz"
    ]


def test_corrections_left_under_results_are_read_then_moved_out_by_the_review_job(
    tmp_path, monkeypatch
):
    """An earlier version's datastore kept MONAI Label's submissions in a folder under results/
    (which `make clean` deletes): they are still read, named as left behind, and the review
    job moves them to corrections.dir and links labels/final/ there."""
    from cohortseg.annotation.review import link_final_labels
    from cohortseg.workflow.cohort import legacy_corrections
    from cohortseg.workflow.paths import REVIEW_FINAL_LABELS

    monkeypatch.chdir(tmp_path)
    final = tmp_path / REVIEW_FINAL_LABELS
    final.mkdir(parents=True)
    (final / "demo-009.nii.gz").write_bytes(b"corrected")
    assert legacy_corrections("corrections") == [f"{REVIEW_FINAL_LABELS}/demo-009.nii.gz"]
    cohort = workflow_cohort(cohort_config(demo_config()))
    assert cohort.corrections == {"demo-009": f"{REVIEW_FINAL_LABELS}/demo-009.nii.gz"}
    link_final_labels(final, "corrections")  # what the review job does
    assert final.is_symlink() and (tmp_path / "corrections" / "demo-009.nii.gz").exists()
    assert legacy_corrections("corrections") == []
    # read once, from corrections.dir (labels/final/ leads to the same folder)
    cohort = workflow_cohort(cohort_config(demo_config()))
    assert cohort.corrections == {"demo-009": "corrections/demo-009.nii.gz"}
    (final / "demo-004.nii.gz").write_bytes(b"x")  # MONAI Label submits into the link
    assert (tmp_path / "corrections" / "demo-004.nii.gz").read_bytes() == b"x"
    assert link_final_labels(final, "corrections") == final  # again: nothing to do


def test_the_cohort_config_a_job_gets_is_small_and_rebuilds_the_same_shards():
    config = demo_config()
    small = cohort_config(config)
    assert len(json.dumps(small)) < 2048
    assert workflow_cohort(small) == workflow_cohort(config)


def test_pseudonymised_cohort_uses_keyed_ids_everywhere(monkeypatch):
    monkeypatch.setenv("COHORTSEG_PSEUDONYM_KEY", "secret")
    cohort = workflow_cohort(demo_config(privacy={"pseudonymize": True}))
    first = pseudonym("demo-001", b"secret")
    assert cohort.sheet_subjects[0].subject == "demo-001"
    assert cohort.subjects[0].subject == first
    assert cohort.subjects[0].image == cohort.sheet_subjects[0].image
    assert first in cohort.shards["00000"]
    assert not any(s.startswith("demo-") for m in cohort.shards.values() for s in m)


def test_pseudonymised_cohort_without_a_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("COHORTSEG_PSEUDONYM_KEY", raising=False)
    with pytest.raises(CohortsegError, match="no key"):
        workflow_cohort(demo_config(privacy={"pseudonymize": True}))


# ------------------------------------------------------------------------------ paths


def test_every_product_has_one_path_under_results():
    paths = [
        segmentation_path("s1"),
        inference_manifest_path("00001"),
        meshes_manifest_path("00001"),
        *mesh_paths("s1", ["organ", "tube"], "ply"),
        *preprocessed_paths("s1").values(),
        patch_store_path("s1"),
        validation_shard_path("00001"),
        metrics_shard_path("00001"),
        stats_shard_path("00001"),
    ]
    assert all(p.startswith("results/") for p in paths)
    assert len(set(paths)) == len(paths)
    assert mesh_paths("s1", ["organ"], "stl") == ["results/meshes/s1/organ.stl"]


# ------------------------------------------------------------------------------ SLURM


def test_cpu_rules_request_cpus_memory_and_time_only():
    spec = cluster_resources(cluster(), default_config()["training"], "plan", environ={})
    assert set(spec) == {"mem_mb", "runtime", "cpus_per_task"}


def test_gpu_rules_go_to_the_gpu_partition_with_one_task_per_gpu():
    c = cluster(infer={"gpus": 1, "mem_mb": 16000})
    c.update(partition="cpu", gpu_partition="gpu", gpu_model="a100", account="proj")
    spec = cluster_resources(c, default_config()["training"], "infer", environ={})
    assert spec["gpu"] == 1 and spec["tasks_per_gpu"] == 1 and spec["gpu_model"] == "a100"
    assert spec["slurm_partition"] == "gpu" and spec["slurm_account"] == "proj"
    assert spec["mem_mb"] == 16000 and "tasks" not in spec


def test_partition_and_account_fall_back_to_the_environment():
    env = {
        "COHORTSEG_PARTITION": "short",
        "COHORTSEG_GPU_PARTITION": "gpu-a",
        "COHORTSEG_ACCOUNT": "acc",
    }
    training = default_config()["training"]
    cpu = cluster_resources(cluster(), training, "plan", environ=env)
    gpu = cluster_resources(cluster(train={"gpus": 2}), training, "train", environ=env)
    assert cpu["slurm_partition"] == "short" and cpu["slurm_account"] == "acc"
    assert gpu["slurm_partition"] == "gpu-a"


def test_multi_rank_training_under_srun_starts_its_own_ranks():
    c = cluster(train={"gpus": 4})
    training = {**default_config()["training"], "launcher": "srun", "backend": "ddp"}
    spec = cluster_resources(c, training, "train", environ={})
    assert spec["mpi"] == "srun" and spec["tasks"] == 4
    assert train_launcher(training, c) == "srun --ntasks 4"
    assert train_tasks(cluster(train={"tasks": 2})) == 2


def test_launchers():
    training = {**default_config()["training"], "ranks": 2}
    c = cluster()
    assert train_launcher({**training, "launcher": "none"}, c) == ""
    assert train_launcher({**training, "launcher": "torchrun"}, c).startswith(
        "torchrun --standalone --nproc-per-node 2"
    )
    assert "horovodrun --gloo -np 2" in train_launcher({**training, "launcher": "horovodrun"}, c)
    assert train_launcher({**training, "launcher": "srun"}, c) == ""  # one task
    with pytest.raises(CohortsegError, match="srun needs training.backend: ddp"):
        train_launcher(
            {**training, "launcher": "srun", "backend": "horovod"}, cluster(train={"gpus": 2})
        )


def test_a_federated_plan_is_made_from_one_fingerprint_per_site_of_training_subjects(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(
        "subject\timage\tlabel\tsplit\tsite\n"
        "a\ta.nii.gz\ta_seg.nii.gz\ttrain\tsouth\n"
        "b\tb.nii.gz\tb_seg.nii.gz\ttrain\tnorth\n"
        "c\tc.nii.gz\tc_seg.nii.gz\tval\teast\n"  # no training subject: no fingerprint
        "d\td.nii.gz\td_seg.nii.gz\ttrain\tsouth\n"
    )
    config = default_config()
    config.update(samples=str(sheet))
    cohort = workflow_cohort(config)
    assert plan_subjects_by_site(cohort, fine_tuning=False) == {
        "north": ["b"],
        "south": ["a", "d"],
    }
    assert site_fingerprint_path("north") == "results/sites/north/fingerprint.json"
    assert not is_federated(config)
    config["training"]["backend"] = "federated"
    assert is_federated(config)
    # a sheet without a site column is one site
    assert subject_site(Subject("x", "x.nii.gz", None, "train")) == "local"


def test_federated_shards_hold_one_site_each_and_write_into_its_folder(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sites = ["south", "north", "south", "north", "south", "east"]
    sheet.write_text(
        "subject\timage\tlabel\tsplit\tsite\n"
        + "".join(f"s{k}\ts{k}.nii.gz\ts{k}_seg.nii.gz\ttrain\t{x}\n" for k, x in enumerate(sites))
    )
    config = default_config()
    config.update(samples=str(sheet), shard_size=2)
    assert "site_shards" not in cohort_config(config)  # the other backends' jobs unchanged
    central = workflow_cohort(cohort_config(config))
    assert central.shards == {"00000": ["s0", "s1"], "00001": ["s2", "s3"], "00002": ["s4", "s5"]}
    assert central.product_site("s0") is None
    assert preprocessed_paths("s0")["image"] == "results/preprocessed/s0/image.nii"
    assert patch_store_path("s0") == "results/patches/s0.h5"

    config["training"]["backend"] = "federated"
    cohort = workflow_cohort(cohort_config(config))

    assert cohort.shards == {
        "00000": ["s5"],  # east
        "00001": ["s1", "s3"],  # north
        "00002": ["s0", "s2"],  # south
        "00003": ["s4"],
    }
    assert cohort.product_site("s0") == "south"
    image = preprocessed_paths("s0", "south")["image"]
    assert image == "results/sites/south/preprocessed/s0/image.nii"
    assert site_of_product(image) == "south"
    assert patch_store_path("s0", site_of_product(image)) == "results/sites/south/patches/s0.h5"
    assert site_of_product("results/preprocessed/s0/image.nii") is None
    assert cohort.shard_site("00003") == "south" and central.shard_site("00002") is None
    assert stage_outputs(cohort, "patches") == [
        "results/sites/east/patches/00000.tsv",
        "results/sites/north/patches/00001.tsv",
        "results/sites/south/patches/00002.tsv",
        "results/sites/south/patches/00003.tsv",
    ]
    assert (
        cohort.stage_output("preprocess", "00001") == "results/sites/north/preprocessed/00001.tsv"
    )
    assert cohort.stage_output("infer", "00001") == "results/inference/00001.tsv"
    assert central.stage_output("preprocess", "00001") == "results/preprocessed/00001.tsv"


def test_a_site_finds_its_own_shards_sites_and_the_coordinators_plan(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sites = ["south", "north", "south", "north", "east"]
    splits = ["train", "train", "val", "val", "val"]  # east: no training subject
    sheet.write_text(
        "subject\timage\tlabel\tsplit\tsite\n"
        + "".join(
            f"s{k}\ts{k}.nii.gz\ts{k}_seg.nii.gz\t{split}\t{x}\n"
            for k, (x, split) in enumerate(zip(sites, splits, strict=True))
        )
    )
    config = default_config()
    config.update(samples=str(sheet), shard_size=2)
    assert training_sites(workflow_cohort(cohort_config(config))) == []
    assert plan_input(config) == PLAN
    config["training"]["backend"] = "federated"
    cohort = workflow_cohort(cohort_config(config))
    assert training_sites(cohort) == ["north", "south"]  # sites with patch stores
    assert site_stage_outputs(cohort, "patches", "south") == [
        "results/sites/south/patches/00002.tsv"
    ]
    assert site_stage_outputs(cohort, "preprocess", "east") == [
        "results/sites/east/preprocessed/00000.tsv"
    ]
    assert supernode_paths("north")["supernode.sh"] == (
        "results/sites/north/federated/supernode.sh"
    )
    # at a site: the coordinator's plan, which must exist; not part of the training config
    plan = tmp_path / "coordinator_plan.json"
    config["federated"]["plan"] = str(plan)
    with pytest.raises(CohortsegError, match="federated.plan: no file"):
        plan_input(config)
    plan.write_text("{}")
    assert plan_input(config) == str(plan)
    assert "plan" not in training_config(config)["federated"]
    config["training"]["backend"] = "single"
    with pytest.raises(CohortsegError, match="training.backend: federated"):
        plan_input(config)


def test_the_coordinators_plan_config_is_the_workflows_without_a_sheet():
    defaults = load_yaml(REPO / "config.yaml")
    sites_file = {"training": {"backend": "federated"}, "plan": {"max_patch_size": [32] * 3}}
    got = coordinator_plan_config(defaults, sites_file)
    # what the plan job of a site's workflow gets: a sheet's (cohort) preset over the defaults
    from cohortseg.workflow.presets import apply_preset, merged

    at_site = apply_preset(merged(defaults, {**sites_file, "samples": "x.tsv"}), defaults)
    assert got == plan_config(at_site)
    assert got["plan"]["max_patch_size"] == [32, 32, 32]
    assert got["model"]["name"] == "auto" != defaults["model"]["name"]  # the cohort preset


def test_rule_threads_are_the_rules_cpus_per_task():
    assert rule_threads(cluster(infer={"cpus_per_task": 6}), "infer") == 6
    assert rule_threads(cluster(), "plan") == cluster()["rules"]["default"]["cpus_per_task"]


# ------------------------------------------------------------------------------ inputs, markers


def test_dicom_subjects_read_converted_files_and_only_they_are_converted(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(
        "subject\timage\tlabel\tsplit\tseries\n"
        "a\ta.nii.gz\ta_label.nii.gz\ttrain\t\n"
        "b\tdicom/b\tb_label.nii.gz\ttrain\tSAG_3D_DESS\n"
        "c\tc.nii.gz\tc_seg.dcm\tval\t\n"
        "d\tdicom/d\t\tinfer\t\n"
    )
    config = default_config()
    config.update(samples=str(sheet), shard_size=2)
    cohort = workflow_cohort(config)
    assert cohort.dicom == {"b", "c", "d"}
    assert cohort.by_id["b"].image == converted_paths("b")["image"]
    assert cohort.by_id["b"].label == str(tmp_path / "b_label.nii.gz")
    assert cohort.by_id["c"].label == converted_paths("c")["label"]
    assert cohort.source("b").image == str(tmp_path / "dicom" / "b")
    assert cohort.source("b").series == "SAG_3D_DESS"
    assert cohort.stage_shards("convert") == {"00000": ["b"], "00001": ["c", "d"]}
    assert stage_outputs(cohort, "convert") == [
        "results/converted/00000.tsv",
        "results/converted/00001.tsv",
    ]
    # converted files are stood for by their shard's manifest, never tracked themselves
    converted = [cohort.by_id[s].image for s in "abd"]
    assert tracked(converted, demo=True) == [converted[0]]
    # conversion runs before validation: no job of it leaves anything out
    assert [s.subject for s in job_subjects(cohort, "convert", "00001", "skip")] == ["c", "d"]


def test_pictures_are_converted_but_get_no_dicom_seg(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(
        "subject\timage\tlabel\tsplit\tspacing_mm\n"
        "a\ta.png\ta_mask.png\ttrain\t0.5\n"
        "b\tdicom/b\t\ttest\t\n"
        "c\tc.tif\t\ttest\t0.5,0.6\n"
    )
    config = default_config()
    config.update(samples=str(sheet), shard_size=4)
    cohort = workflow_cohort(config)
    assert cohort.dicom == {"a", "b", "c"}
    assert cohort.by_id["a"].image == converted_paths("a")["image"]
    assert cohort.by_id["a"].label == converted_paths("a")["label"]
    assert cohort.source("c").spacing_mm == (0.5, 0.6)
    assert cohort.stage_shards("convert") == {"00000": ["a", "b", "c"]}
    assert cohort.stage_shards("dicom_seg") == {"00000": ["b"]}


def test_real_cohort_inputs_are_tracked_only_where_they_exist(tmp_path):
    there = tmp_path / "a.nii.gz"
    there.write_bytes(b"x")
    paths = [str(there), str(tmp_path / "missing.nii.gz"), None]
    assert tracked(paths, demo=False) == [str(there)]
    assert tracked(paths, demo=True) == paths[:2]
    assert made_by_rules(paths, demo=False) == []


def test_a_finished_shard_with_a_missing_file_names_a_new_marker_and_writes_nothing(tmp_path):
    manifest = tmp_path / "00000.tsv"
    kept, lost = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    kept.write_bytes(b"x")
    assert rerun_marker(manifest, "00000", ["segmentation"]) == ([], "")  # not run yet
    # the manifest lists what the job wrote (a subject it left out is not missing)
    manifest.write_text(f"subject\tsegmentation\na\t{kept}\nb\t{lost}\n")
    before = sorted(tmp_path.rglob("*"))
    found, reason = rerun_marker(manifest, "00000", ["segmentation"])
    assert reason == f"{lost}: missing\n"
    marker = found[0]
    assert marker.startswith(f"{tmp_path}/.incomplete/00000.") and not os.path.exists(marker)
    assert rerun_marker(manifest, "00000", ["segmentation"]) == (found, reason)  # stable
    assert sorted(tmp_path.rglob("*")) == before  # planning wrote nothing
    write_marker(marker, reason, tmp_path / "marker.log")  # the rerun_marker job
    lost.write_bytes(b"x")  # the shard ran again: the marker stays its input, nothing reruns
    os.utime(manifest, (time.time() + 5, time.time() + 5))
    assert rerun_marker(manifest, "00000", ["segmentation"]) == (found, "")
    lost.unlink()  # the same file lost again after the repair: a new incident, a new marker
    again, _ = rerun_marker(manifest, "00000", ["segmentation"])
    assert again != found and not os.path.exists(again[0])


def test_a_store_of_another_size_than_its_manifest_records_is_damaged(tmp_path):
    store, manifest = tmp_path / "s.h5", tmp_path / "00000.tsv"
    store.write_bytes(b"x" * 100)
    manifest.write_text(f"subject\tstore\tbytes\tsha256\ns\t{store}\t100\tabc\n")
    assert rerun_marker(manifest, "00000", ["store"]) == ([], "")
    store.write_bytes(b"x" * 50)  # cut short
    found, reason = rerun_marker(manifest, "00000", ["store"])
    assert found and reason == f"{store}: damaged (50 bytes, written as 100)\n"


def test_a_real_cohorts_own_files_are_stood_for_by_a_digest_that_changes_with_them(tmp_path):
    image = tmp_path / "a.nii.gz"
    image.write_bytes(b"x")
    paths = [str(image), str(tmp_path / "missing.nii.gz"), None]
    digest = files_digest(paths, demo=False)
    assert digest and digest == files_digest(paths, demo=False)
    image.write_bytes(b"xy")  # replaced
    assert files_digest(paths, demo=False) != digest
    # files a rule makes are inputs instead: the demo's, checked corrections
    assert files_digest(paths, demo=True) == ""
    assert files_digest(["results/corrections/a.nii.gz"], demo=False) == ""
    assert made_by_rules(["results/corrections/a.nii.gz", str(image)], demo=False) == [
        "results/corrections/a.nii.gz"
    ]


def test_training_inputs_come_from_the_shard_manifests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = demo_config()  # shards of 4: 00000 has demo-001..004 (train ×3, val)
    write_tsv(
        patch_manifest_path("00000"),
        [{"subject": "demo-001", "store": "s1.h5"}],
        ["subject", "store"],
    )
    row = {"subject": "demo-004", "split": "val", "image": "i.nii", "label": "l.nii.gz"}
    other = {**row, "subject": "demo-001", "split": "train"}
    write_tsv(preprocessed_manifest_path("00000"), [other, row], list(row))
    stores, val = training_inputs(config)
    assert stores == ["s1.h5"]
    assert val == [Subject("demo-004", "i.nii", "l.nii.gz", "val")]


def test_inference_settings_that_training_does_not_read_do_not_reach_it():
    config = default_config()
    settings = {**config["inference"], "tta": "mirror", "uncertainty_maps": True, "num_workers": 7}
    changed = training_config({**config, "inference": settings})
    assert changed == training_config(config)
    assert set(changed["inference"]) == {"overlap", "sw_batch_size"}
    assert changed["model"] == config["model"] and changed["training"] == config["training"]


def test_robustness_takes_the_first_labelled_test_subjects_that_are_valid():
    cohort = workflow_cohort(default_config())
    test = [s.subject for s in cohort.subjects if s.split == "test"]
    assert [s.subject for s in robustness_subjects(cohort, 2)] == test[:2]
    assert [s.subject for s in robustness_subjects(cohort, 2, {test[0]})] == test[1:3]
    assert len(robustness_subjects(cohort, 100)) == len(test)
