"""Sample patches from one shard of preprocessed training subjects into one HDF5 patch store
per subject, then write the shard's manifest."""

import argparse
import os
import zlib

import numpy as np

from cohortseg.core.cohort import Subject
from cohortseg.core.failures import for_each_subject
from cohortseg.core.geometry import spacing_of
from cohortseg.core.io import load_nifti, read_json, read_tsv, write_manifest
from cohortseg.preprocessing.patches import write_store
from cohortseg.workflow.cli import json_arg, run
from cohortseg.workflow.markers import BYTES_COLUMN
from cohortseg.workflow.paths import patch_store_path, site_of_product


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preprocessed", required=True, help="the shard's preprocessing manifest")
    parser.add_argument("--plan", required=True)
    parser.add_argument("--patches", type=json_arg, required=True, help="patches config, JSON")
    parser.add_argument("--manifest", required=True, help="the shard's manifest (TSV) to write")
    args = parser.parse_args()
    cfg, plan = args.patches, read_json(args.plan)
    # the preprocessing manifest lists what was preprocessed (invalid subjects left out)
    subjects = [
        Subject(r["subject"], r["image"], r["label"], r["split"])
        for r in read_tsv(args.preprocessed)
        if r["split"] == "train"
    ]

    def extract(s: Subject) -> dict[str, str]:
        image, affine = load_nifti(s.image, s.subject)
        label, _ = load_nifti(s.label, s.subject, dtype=np.uint8)
        # beside the subject's preprocessed files: in its site's folder when federated
        store = patch_store_path(s.subject, site_of_product(s.image))
        write_store(
            store,
            s.subject,
            image,
            label,
            affine,
            spacing_of(affine).tolist(),
            plan,
            n_patches=int(cfg["per_subject"]),
            foreground_fraction=float(cfg["foreground_fraction"]),
            compression=cfg["compression"],
            compression_level=int(cfg["compression_level"]),
            # a per-subject seed that does not depend on the subject's position in the cohort
            seed=int(cfg["seed"]) * 2**32 + zlib.crc32(s.subject.encode()),
        )
        return {"subject": s.subject, "store": store, BYTES_COLUMN: os.path.getsize(store)}

    stored = for_each_subject(subjects, extract)
    # with each store's SHA-256: a store whose content changed changes the manifest, which is
    # what tells Snakemake (it compares the checksums of small inputs) to train again; with its
    # size: a store of another size later (cut short) is rebuilt (cohortseg.workflow.markers)
    write_manifest(args.manifest, stored, ["subject", "store", BYTES_COLUMN], "store")


if __name__ == "__main__":
    run(main)
