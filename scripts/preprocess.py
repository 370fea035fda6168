"""Preprocess one shard of labelled subjects onto the plan's grid (image, label and geometry
per subject), then write the shard's manifest."""

import argparse

import numpy as np

from cohortseg.core.cohort import Subject
from cohortseg.core.failures import for_each_subject
from cohortseg.core.io import read_json, save_nifti, sha256_file, write_json, write_tsv
from cohortseg.preprocessing.prepare import prepare_subject
from cohortseg.workflow.cli import add_shard_arguments, run, shard_subjects
from cohortseg.workflow.paths import preprocessed_paths, product_site

# with the SHA-256 of the files: a subject whose preprocessed data changed changes the manifest,
# which is what tells Snakemake (it compares the checksums of small inputs) to redo what follows
COLUMNS = ["subject", "split", "image", "label", "geometry", "image_sha256", "label_sha256"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_shard_arguments(parser)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--manifest", required=True, help="the shard's manifest (TSV) to write")
    parser.add_argument(
        "--affine-tolerance-mm",
        type=float,
        required=True,
        help="validation.affine_tolerance_mm: how far (mm) the label may lie off the image's grid",
    )
    args = parser.parse_args()
    plan = read_json(args.plan)
    site_shards = bool(args.cohort.get("site_shards"))  # federated: into the site's folder

    def preprocess(s: Subject) -> dict[str, str]:
        image, label, geometry = prepare_subject(
            s.subject, s.image, s.label, plan, args.affine_tolerance_mm
        )
        paths = preprocessed_paths(s.subject, product_site(s, site_shards))
        grid_affine = np.asarray(geometry.affine)
        save_nifti(paths["image"], image[0].numpy(), grid_affine, dtype=np.float32)
        save_nifti(paths["label"], label[0].numpy(), grid_affine, dtype=np.uint8)
        write_json(paths["geometry"], geometry.to_dict())
        hashes = {f"{k}_sha256": sha256_file(paths[k]) for k in ("image", "label")}
        return {"subject": s.subject, "split": s.split, **paths, **hashes}

    rows = for_each_subject(shard_subjects(args, "preprocess"), preprocess)
    write_tsv(args.manifest, rows, COLUMNS)


if __name__ == "__main__":
    run(main)
