"""Tests for cohortseg.preprocessing.site_fingerprint: site fingerprints hold aggregates only, and
their merge gives the central plan (exactly for spacing and patch size, to float64 rounding for mean
and std, within the stated bound for percentiles)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import load_nifti, read_json, save_nifti, write_json
from cohortseg.inputs.demo import demo_phantom
from cohortseg.preprocessing.plan import fingerprint, make_plan
from cohortseg.preprocessing.site_fingerprint import (
    PERCENTILE_RELATIVE_ERROR,
    intensity_summary,
    merge_fingerprints,
    merge_intensity,
    read_site_fingerprints,
    site_fingerprint,
    summary_percentile,
)
from cohortseg.workflow.config import cohort_config
from cohortseg.workflow.paths import INVALID_TABLE, site_fingerprint_path
from tests.conftest import REPO, default_config

# Three sites of different scanners: spacing, shape and intensity scale differ.
SITES = {
    "north": {"n": 3, "spacing": (1.6, 1.6, 2.4), "shape": (30, 28, 20), "scale": 1.0},
    "south": {"n": 2, "spacing": (2.0, 2.0, 3.0), "shape": (26, 26, 18), "scale": 1.6},
    "west": {"n": 2, "spacing": (1.2, 1.4, 2.0), "shape": (34, 30, 22), "scale": 0.6},
}


@pytest.fixture(scope="module")
def site_subjects(tmp_path_factory) -> dict[str, list[Subject]]:
    root = tmp_path_factory.mktemp("sites")
    out, k = {}, 0
    for site, spec in SITES.items():
        out[site] = []
        for _ in range(spec["n"]):
            image, label, affine = demo_phantom(spec["shape"], spec["spacing"], seed=k)
            image = (image * spec["scale"]).astype(np.int16)
            save_nifti(root / f"s{k}.nii.gz", image, affine)
            save_nifti(root / f"s{k}_seg.nii.gz", label, affine)
            sid = f"sub-{site}-{k:03d}"
            out[site].append(
                Subject(sid, str(root / f"s{k}.nii.gz"), str(root / f"s{k}_seg.nii.gz"), "train")
            )
            k += 1
    return out


@pytest.fixture(scope="module")
def merged_and_central(site_subjects):
    merged = merge_fingerprints({site: site_fingerprint(s) for site, s in site_subjects.items()})
    everyone = [s for subjects in site_subjects.values() for s in subjects]
    return merged, fingerprint(everyone, samples_per_subject=None)


def test_merged_mean_and_std_equal_the_central_ones(merged_and_central):
    merged, central = merged_and_central

    # Both are float64 sums of the same ~10^4 voxels in different groupings (numpy's pairwise
    # sums per site, Chan's update across sites): rounding errors of order ε·log2(N) ≈ 1e-15
    # relative; 1e-12 leaves a wide margin and still catches any lost voxel or wrong weight.
    assert merged["intensity"]["mean"] == pytest.approx(central["intensity"]["mean"], rel=1e-12)
    assert merged["intensity"]["std"] == pytest.approx(central["intensity"]["std"], rel=1e-12)


@pytest.mark.parametrize("model", ["UNet", "auto"])
def test_merged_plan_equals_the_central_plan(merged_and_central, model):
    merged, central = merged_and_central
    config = default_config()
    config["model"]["name"] = model

    fed, cen = make_plan(merged, config), make_plan(central, config)

    for key in ("target_spacing_mm", "median_shape", "patch_size", "network", "normalization"):
        assert fed.get(key) == cen.get(key), key
    for key, value in cen["intensity"].items():
        if key in ("mean", "std"):
            assert fed["intensity"][key] == pytest.approx(value, rel=1e-12)
        else:
            # bounded exactly in test_merged_percentiles_of_the_phantoms_are_within_the_bound
            assert fed["intensity"][key] == pytest.approx(value, rel=2 * PERCENTILE_RELATIVE_ERROR)


def percentile_bound(values: np.ndarray, q: float) -> float:
    """The stated error bound of a merged percentile: α × max(|x_k|, |x_k+1|)."""
    x = np.sort(values)
    h = (x.size - 1) * q / 100
    k = int(np.floor(h))
    return PERCENTILE_RELATIVE_ERROR * max(abs(x[k]), abs(x[min(k + 1, x.size - 1)]))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("q", [0.5, 50.0, 99.5])
def test_merged_percentile_error_is_within_the_stated_bound_on_skewed_data(seed, q):
    rng = np.random.default_rng(seed)
    sites = [  # three sites, skewed (log-normal, heavy tail), of different scale and size
        rng.lognormal(mean=5.0, sigma=1.0, size=20_000),
        1.6 * rng.lognormal(mean=4.0, sigma=1.5, size=5_000),
        np.concatenate([rng.exponential(300.0, 8_000) - 200.0, np.zeros(500)]),  # CT-like: ≤ 0
    ]
    merged = intensity_summary(sites[0])
    for values in sites[1:]:
        merged = merge_intensity(merged, intensity_summary(values))
    pooled = np.concatenate(sites)

    error = abs(summary_percentile(merged, q) - np.percentile(pooled, q))

    assert error <= percentile_bound(pooled, q) * (1 + 1e-9)
    assert merged["count"] == pooled.size
    assert merged["min"] == pooled.min() and merged["max"] == pooled.max()


def test_merged_percentiles_of_the_phantoms_are_within_the_bound(site_subjects, merged_and_central):
    merged, _ = merged_and_central
    pooled = np.concatenate([foreground_voxels(s) for ss in site_subjects.values() for s in ss])

    for key, q in (("percentile_00_5", 0.5), ("percentile_50_0", 50), ("percentile_99_5", 99.5)):
        error = abs(merged["intensity"][key] - np.percentile(pooled, q))
        assert error <= percentile_bound(pooled, q) * (1 + 1e-9), key


def foreground_voxels(subject: Subject) -> np.ndarray:
    """The subject's voxels labelled foreground, float64."""
    image, _ = load_nifti(subject.image)
    label, _ = load_nifti(subject.label, dtype=np.uint8)
    return image[label > 0].astype(np.float64)


def test_a_site_fingerprint_holds_no_subject_id_and_no_voxels(site_subjects):
    subjects = site_subjects["north"]

    fp = site_fingerprint(subjects)

    text = json.dumps(fp)
    for s in subjects:
        assert s.subject not in text
        assert s.image not in text and s.label not in text
    assert set(fp) == {"n_subjects", "spacings_mm", "shapes", "intensity"}
    assert fp["n_subjects"] == len(subjects)
    foreground = np.concatenate([foreground_voxels(s) for s in subjects])
    assert fp["intensity"]["count"] == foreground.size

    def lists(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from lists(v)
        elif isinstance(node, list):
            yield node
            for v in node:
                yield from lists(v)

    # the longest lists are the histogram's bins (at most one per distinct intensity) and
    # counts, far fewer than the voxels they count
    distinct = np.unique(foreground).size
    assert max(len(x) for x in lists(fp)) <= distinct < foreground.size / 5
    positive, negative = (
        fp["intensity"]["histogram"]["positive"],
        fp["intensity"]["histogram"]["negative"],
    )
    zeros = fp["intensity"]["histogram"]["zero"]
    assert sum(positive[1]) + sum(negative[1]) + zeros == foreground.size


def test_merge_does_not_depend_on_the_order_of_sites(site_subjects):
    fps = {site: site_fingerprint(s) for site, s in site_subjects.items()}

    a = merge_fingerprints(fps)
    b = merge_fingerprints(dict(reversed(list(fps.items()))))

    assert a["spacings_mm"] == b["spacings_mm"] and a["shapes"] == b["shapes"]
    assert a["intensity"] == pytest.approx(b["intensity"], rel=1e-12)
    assert a["sites"] == {"north": 3, "south": 2, "west": 2}


def test_merge_refuses_different_bins_and_no_subjects():
    a = intensity_summary(np.arange(1.0, 10.0))
    b = intensity_summary(np.arange(1.0, 10.0), relative_error=0.01)
    with pytest.raises(CohortsegError, match="relative_error"):
        merge_intensity(a, b)
    empty = {"n_subjects": 0, "spacings_mm": [], "shapes": [], "intensity": a}
    with pytest.raises(CohortsegError, match="training subject"):
        merge_fingerprints({"north": empty})


def test_the_plan_script_merges_site_fingerprints_without_any_image(site_subjects, tmp_path):
    """scripts/plan.py given the sites' fingerprints makes the plan from them alone: the sample
    sheet's images do not even exist at the coordinator."""
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(
        "subject\timage\tlabel\tsplit\tsite\n"
        + "".join(
            f"{s.subject}\tnowhere/{s.subject}.nii.gz\tnowhere/{s.subject}_seg.nii.gz\ttrain\t{site}\n"
            for site, subjects in site_subjects.items()
            for s in subjects
        )
    )
    fps = {site: site_fingerprint(s) for site, s in site_subjects.items()}
    for site, fp in fps.items():
        write_json(tmp_path / site_fingerprint_path(site), fp)
    config = default_config()
    config["samples"] = str(sheet)
    plan_config = {**{k: config[k] for k in ("plan", "model", "classes")}, "init_from": None}

    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "plan.py"),
            "--cohort",
            json.dumps(cohort_config(config)),
            "--invalid",
            INVALID_TABLE,
            "--config",
            json.dumps(plan_config),
            "--site-fingerprints",
            *(site_fingerprint_path(site) for site in fps),
            "--fingerprint",
            "fingerprint.json",
            "--plan",
            "plan.json",
        ],
        cwd=tmp_path,
        check=True,
    )

    assert read_json(tmp_path / "plan.json") == make_plan(merge_fingerprints(fps), plan_config)
    assert read_json(tmp_path / "fingerprint.json")["sites"] == {"north": 3, "south": 2, "west": 2}


def test_the_coordinator_reads_fingerprints_named_by_their_site(tmp_path):
    write_json(tmp_path / "results" / "sites" / "north" / "fingerprint.json", {"n_subjects": 2})
    write_json(tmp_path / "inbox" / "south.json", {"n_subjects": 3})
    got = read_site_fingerprints(
        [tmp_path / "results/sites/north/fingerprint.json", tmp_path / "inbox/south.json"]
    )
    assert got == {"north": {"n_subjects": 2}, "south": {"n_subjects": 3}}
    write_json(tmp_path / "north.json", {"n_subjects": 2})
    with pytest.raises(CohortsegError, match="two fingerprints of site 'north'"):
        read_site_fingerprints(
            [tmp_path / "results/sites/north/fingerprint.json", tmp_path / "north.json"]
        )
