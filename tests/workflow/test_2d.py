"""2D images through the whole volume pipeline, from validation to the report, through the real
snakemake CLI: the 2D demo's phantoms (``demo.dims: 2``) as a sample sheet of single-slice
NIfTI, PNG (grey 16-bit and RGB) and TIFF images, kept small (4 subjects of 64 × 64 pixels, a
few training steps, the report's extras on one or two subjects)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from cohortseg.core.io import read_tsv, save_nifti
from cohortseg.inputs.demo import demo_phantom_2d
from cohortseg.inputs.pictures import picture_affine
from tests.workflow.conftest import snakemake

pytestmark = pytest.mark.slow

SPACING_MM = 1.7
SMALL = [
    # the demo's small UNet, in-plane (a sample sheet's default is the plan's DynUNet)
    "training={epochs: 2, steps_per_epoch: 3, preset: demo}",
    "shard_size=8",  # one job per sharded stage
    "patches={per_subject: 6}",
    "report={robustness_subjects: 1, robustness_strengths: [1.0], qc_sample: 1, qc_worst: 1,"
    " qc_unusual: 0}",
]


def make_sheet(root):
    """4 subjects: NIfTI (X, Y, 1) train and test, a 16-bit PNG train, an RGB PNG val and a
    TIFF test, labels as NIfTI or PNG; returns the sheet and each subject's expected grid."""
    rows = ["subject\timage\tlabel\tsplit\tspacing_mm"]
    grids = {}
    kinds = [("nii", "train"), ("png16", "train"), ("rgb", "val"), ("tif", "test")]
    for k, (kind, split) in enumerate(kinds):
        image, label, affine = demo_phantom_2d([64, 64, 16], [SPACING_MM] * 3, seed=k)
        pixels = np.clip(image[:, :, 0].T, 0, None).astype(np.uint16)  # rows, columns
        if kind == "nii":
            save_nifti(root / f"s{k}.nii.gz", image, affine)
            save_nifti(root / f"s{k}_label.nii.gz", label, affine)
            names, grids[f"s{k}"] = (f"s{k}.nii.gz", f"s{k}_label.nii.gz", ""), affine
        else:
            name = f"s{k}.tif" if kind == "tif" else f"s{k}.png"
            if kind == "tif":
                tifffile.imwrite(root / name, pixels)
            elif kind == "rgb":
                Image.fromarray(np.stack([(pixels // 4).astype(np.uint8)] * 3, -1)).save(
                    root / name
                )
            else:
                Image.fromarray(pixels).save(root / name)
            Image.fromarray(label[:, :, 0].T).save(root / f"s{k}_label.png")
            names = (name, f"s{k}_label.png", str(SPACING_MM))
            grids[f"s{k}"] = picture_affine([SPACING_MM, SPACING_MM])
        rows.append(f"s{k}\t{names[0]}\t{names[1]}\t{split}\t{names[2]}")
    (root / "samples.tsv").write_text("\n".join(rows) + "\n")
    return root / "samples.tsv", grids


def test_2d_images_run_in_plane_and_keep_every_slices_grid(tmp_path):
    (tmp_path / "data").mkdir()
    sheet, grids = make_sheet(tmp_path / "data")
    work = tmp_path / "work"

    # up to metrics, statistics and QC montages (the report's other extras: the 3D demo)
    targets = ["results/metrics.tsv", "results/stats.tsv", "results/qc/montages"]
    snakemake(work, *targets, "--cores", "2", "--config", f"samples={sheet}", *SMALL)

    plan = json.loads((work / "results" / "plan" / "plan.json").read_text())
    assert plan["spatial_dims"] == 2 and plan["patch_size"][2] == 1
    rows = read_tsv(work / "results" / "metrics.tsv")
    assert sorted(r["subject"] for r in rows) == sorted(grids)
    for row in rows:
        subject = row["subject"]
        seg = nib.load(work / "results" / "segmentations" / f"{subject}.nii.gz")
        assert seg.shape == (64, 64, 1), subject
        np.testing.assert_allclose(seg.affine, grids[subject], atol=1e-5, err_msg=subject)
        assert 0.0 <= float(row["dice_organ"]) <= 1.0, subject  # every subject is labelled
        assert float(row["hd95_mm_organ"]) >= 0.0, subject
    assert sorted((work / "results" / "qc" / "montages").glob("*.png"))
    stats = read_tsv(work / "results" / "stats.tsv")
    assert all(float(r["volume_ml_organ"]) > 0 for r in stats if r["subject"] in grids)
