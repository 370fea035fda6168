"""training.backend: federated through the workflow: a cohort of two sites (the sample sheet's
`site` column) is planned from the sites' fingerprints, preprocessed and cut into patches by
jobs of each site into its folder, trains by Flower rounds between a SuperLink and one
SuperNode per site started by the train job, and the rest of the pipeline runs unchanged on the
global model. Then a hospital's own part alone: in a working directory of its own with a sheet of
its subjects only, its fingerprint, then its patch stores with the coordinator's plan (merged
from the fingerprint files alone) and its SuperNode inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from cohortseg.core.cohort import Subject
from cohortseg.core.io import read_json, read_tsv, save_nifti
from cohortseg.inputs.demo import demo_phantom
from cohortseg.preprocessing.plan import fingerprint, make_plan
from tests.conftest import REPO, default_config
from tests.preprocessing.test_site_fingerprint import foreground_voxels, percentile_bound
from tests.workflow.conftest import snakemake
from tests.workflow.test_invalid_input import FAST

pytestmark = pytest.mark.slow


def two_site_cohort(root):
    rows = ["subject\timage\tlabel\tsplit\tsite"]
    for k, (split, site) in enumerate(
        [("train", "north"), ("train", "north"), ("val", "north"), ("train", "south")]
        + [("train", "south"), ("val", "south"), ("test", "north"), ("test", "south")]
    ):
        image, label, affine = demo_phantom([32, 32, 24], [2.5, 2.5, 3.5], seed=k)
        scale = 1.0 if site == "north" else 1.6  # sites differ in intensity scale
        save_nifti(root / f"img/s{k}.nii.gz", (image * scale).astype("int16"), affine)
        save_nifti(root / f"lab/s{k}.nii.gz", label, affine)
        rows.append(f"sub-{k}\timg/s{k}.nii.gz\tlab/s{k}.nii.gz\t{split}\t{site}")
    (root / "samples.tsv").write_text("\n".join(rows) + "\n")
    return root / "samples.tsv"


def test_federated_backend_trains_by_rounds_between_sites(tmp_path):
    sheet = two_site_cohort(tmp_path / "data")
    work = tmp_path / "work"
    snakemake(
        work,
        "results/metrics.tsv",  # the report's extras are checked on the demo
        "--cores",
        "2",
        "--config",
        f"samples={sheet}",
        "training={backend: federated}",
        "federated={rounds: 1, local_steps: 2}",  # rounds and resume: tests/federated/test_task.py
        *FAST,
    )
    log = read_tsv(work / "results" / "model" / "training_log.tsv")
    assert [r["round"] for r in log] == ["1"]
    assert all("val_dice_mean@north" in r and "val_dice_mean@south" in r for r in log)
    rows = read_tsv(sheet)
    for site in ("north", "south"):
        folder = work / "results" / "sites" / site
        stores = (folder / "federated" / "stores.txt").read_text()
        assert stores.count(".h5") == 2
        # a site's shards are jobs of that site: preprocessed subjects and stores in its folder
        train_val = {r["subject"] for r in rows if r["site"] == site and r["split"] != "test"}
        assert {p.name for p in (folder / "preprocessed").iterdir() if p.is_dir()} == train_val
        train = {r["subject"] for r in rows if r["site"] == site and r["split"] == "train"}
        assert {p.stem for p in (folder / "patches").glob("*.h5")} == train
        assert all(str(folder / "patches") in line for line in stores.splitlines())
        # its validation shards too
        validated = {r["subject"] for t in (folder / "qc" / "validation").glob("*.tsv")
                     for r in read_tsv(t)}  # fmt: skip
        assert validated <= {r["subject"] for r in rows if r["site"] == site}
        assert len(list((folder / "qc" / "validation").glob("*.tsv"))) >= 1
    assert not (work / "results" / "qc" / "validation").exists()
    assert not (work / "results" / "preprocessed").exists()
    assert not (work / "results" / "patches").exists()
    assert len(read_tsv(work / "results" / "metrics.tsv")) == 8
    check_federated_plan(sheet, work)
    check_one_site_alone(sheet, work, tmp_path)


def check_one_site_alone(sheet, work, tmp_path):
    """Hospital north runs its own part in its own working directory on a sheet of its own
    subjects: its fingerprint (`snakemake results/sites/north/fingerprint.json`), then, with
    the plan the coordinator merged from the sites' fingerprint files without any sample
    sheet (scripts/plan.py), `snakemake site`: its patch stores, the same as the one-machine
    run's (the same plan hash and patches), and its SuperNode inputs, running only its own
    jobs."""
    rows = sheet.read_text().splitlines()
    north_sheet = sheet.parent / "north.tsv"
    north_sheet.write_text("\n".join([rows[0], *[r for r in rows if r.endswith("north")]]) + "\n")
    site = tmp_path / "north"
    config = ["--cores", "2", "--config", f"samples={north_sheet}"]
    config += ["training={backend: federated}", "federated={rounds: 1, local_steps: 2}"]
    fingerprint = "results/sites/north/fingerprint.json"
    snakemake(site, fingerprint, *config, *FAST)
    assert read_json(site / fingerprint) == read_json(work / fingerprint)
    assert not (site / "logs" / "preprocess").exists()  # the fingerprint only

    coordinator = tmp_path / "coordinator"  # no sample sheet, no image: the two files sent
    coordinator.mkdir()
    (coordinator / "fed.yaml").write_text(
        "training: {preset: demo}\nplan: {max_patch_size: [32, 32, 32]}\n"  # as FAST
    )
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "plan.py"), "--configfile", "fed.yaml"]
        + ["--site-fingerprints", str(site / fingerprint)]
        + [str(work / "results/sites/south/fingerprint.json")]
        + ["--fingerprint", "fingerprint.json", "--plan", "plan.json"],
        cwd=coordinator,
        check=True,
    )
    plan = read_json(coordinator / "plan.json")
    assert plan == read_json(work / "results" / "plan" / "plan.json")

    shutil.copyfile(coordinator / "plan.json", site / "coordinator_plan.json")
    config[-1] = "federated={rounds: 1, local_steps: 2, plan: coordinator_plan.json}"
    snakemake(site, "site", *config, *FAST)
    assert not (site / "results" / "plan").exists() and not (site / "logs" / "train.log").exists()
    here, there = (p / "results/sites/north/patches" for p in (site, work))
    assert sorted(p.name for p in here.glob("*.h5")) == ["sub-0.h5", "sub-1.h5"]
    for store in here.glob("*.h5"):
        with h5py.File(store) as a, h5py.File(there / store.name) as b:
            assert a.attrs["plan_hash"] == b.attrs["plan_hash"] == plan["hash"]
            assert sorted(a) == sorted(b)
            for name in a:
                assert np.array_equal(a[name][()], b[name][()]), (store.name, name)
    federated = site / "results" / "sites" / "north" / "federated"
    assert (federated / "stores.txt").read_text().count(".h5") == 2
    assert [r["subject"] for r in read_tsv(federated / "val.tsv")] == ["sub-2"]
    assert read_json(federated / "plan.json") == plan
    script = (federated / "supernode.sh").read_text()
    assert f'stores="{federated / "stores.txt"}"' in script and "flower-supernode" in script


def check_federated_plan(sheet, work):
    """Each site fingerprinted its own training subjects with no id or path in it, the plan job
    merged them without opening an image, and the plan is the central plan of the same subjects
    (spacing, shape and patch exactly; mean and std to float64 rounding; percentiles within
    cohortseg.preprocessing.site_fingerprint's stated bound)."""
    rows = read_tsv(sheet)
    train = [
        Subject(
            r["subject"], str(sheet.parent / r["image"]), str(sheet.parent / r["label"]), "train"
        )
        for r in rows
        if r["split"] == "train"
    ]
    for site in ("north", "south"):
        site_fp = (work / "results" / "sites" / site / "fingerprint.json").read_text()
        assert json.loads(site_fp)["n_subjects"] == 2
        for r in rows:
            assert r["subject"] not in site_fp and r["image"] not in site_fp
    assert "plan merged from 2 site fingerprint(s)" in (work / "logs" / "plan.log").read_text()
    config = default_config()
    config["plan"]["max_patch_size"] = [32, 32, 32]  # as FAST
    central = make_plan(fingerprint(train, samples_per_subject=None), config)
    plan = read_json(work / "results" / "plan" / "plan.json")
    for key in ("target_spacing_mm", "median_shape", "patch_size", "normalization"):
        assert plan[key] == central[key], key
    for key in ("mean", "std"):
        assert plan["intensity"][key] == pytest.approx(central["intensity"][key], rel=1e-12)
    pooled = np.concatenate([foreground_voxels(s) for s in train])
    for key, q in (("percentile_00_5", 0.5), ("percentile_50_0", 50), ("percentile_99_5", 99.5)):
        error = abs(plan["intensity"][key] - central["intensity"][key])
        assert error <= percentile_bound(pooled, q) * (1 + 1e-9), key
