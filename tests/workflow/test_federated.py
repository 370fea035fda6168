"""training.backend: federated through the workflow: a cohort of two sites (the sample sheet's
`site` column) trains by Flower rounds between a SuperLink and one SuperNode per site started
by the train job, and the rest of the pipeline runs unchanged on the global model."""

from __future__ import annotations

import pytest

from cohortseg.io import read_tsv, save_nifti
from cohortseg.phantoms import demo_phantom
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
        "federated={rounds: 1, local_steps: 2}",  # rounds and resume: tests/test_federated.py
        *FAST,
    )
    log = read_tsv(work / "results" / "model" / "training_log.tsv")
    assert [r["round"] for r in log] == ["1"]
    assert all("val_dice_mean@north" in r and "val_dice_mean@south" in r for r in log)
    for site in ("north", "south"):
        stores = (work / "results" / "sites" / site / "federated" / "stores.txt").read_text()
        assert stores.count(".h5") == 2
    assert len(read_tsv(work / "results" / "metrics.tsv")) == 8
