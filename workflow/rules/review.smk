# The review package: what a reviewer opens in 3D Slicer (image + .seg.nrrd) or serves with
# MONAI Label (results/review/datastore). The declared output is the table; the files beside it
# are written atomically but not declared, so that a rerun never deletes the corrections that
# MONAI Label puts into results/review/datastore/labels/final/.


rule review:
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
    container:
        CONTAINER
    resources:
        **cluster_resources("review"),
    params:
        script=script("review.py"),
        classes=config["classes"],
        review=as_json(config["review"]),
        cohort=COHORT_JSON,
    shell:
        "python {params.script} --stats {input.stats} --metrics {input.metrics}"
        " --classes {params.classes} --review {params.review} --cohort {params.cohort}"
        " --table {output} > {log} 2>&1"
