# The review package: what a reviewer opens in 3D Slicer (image + .seg.nrrd) or serves with
# MONAI Label (results/review/datastore). The declared output is the table; the files beside it
# are written atomically but not declared. The reviewers' work lives outside results/: a
# Slicer save goes to corrections.dir, and the datastore's labels/final/ (where MONAI Label puts
# a submitted correction) is a link to corrections.dir, so neither `make clean` nor a rerun
# deletes a correction.


rule review:
    """The subjects a person should correct (QC outliers, empty or failed segmentations, the
    lowest Dice, review.subjects), for 3D Slicer and as a MONAI Label datastore."""
    input:
        stats="results/stats.tsv",
        metrics="results/metrics.tsv",
    output:
        paths.REVIEW_TABLE,
    log:
        "logs/review.log",
    benchmark:
        "logs/benchmarks/review.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("review"),
    params:
        classes=config["classes"],
        review=as_json(config["review"]),
        cohort=COHORT_JSON,
        corrections=(
            f"--corrections-dir {shlex.quote(config['corrections']['dir'])}"
            if config["corrections"]["dir"]
            else ""
        ),
    shell:
        command(
            "review.py",
            "--stats {input.stats} --metrics {input.metrics} --classes {params.classes}"
            " --review {params.review} --cohort {params.cohort} --table {output}"
            " {params.corrections}",
        )
