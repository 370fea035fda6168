# Per-subject statistics of the segmentations: one job per inference shard, then joined into the
# cohort's table and summary (outliers by robust z-score, progress counts).


# The shard's metrics stand for its segmentations (they are newer than all of them), so that
# each segmentation is requested by one rule only: planning 50,000 subjects stays fast.
rule stats:
    """Per-subject statistics of a shard's segmentations (volume, surface, components, world
    box) and the uncertainty scores inference wrote."""
    input:
        metrics=paths.metrics_shard_path("{shard}"),
        segmented=inference_manifest("{shard}"),
        uncertainty=paths.uncertainty_shard_path("{shard}"),
    output:
        paths.stats_shard_path("{shard}"),
    log:
        "logs/stats/{shard}.log",
    benchmark:
        "logs/benchmarks/stats/{shard}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("stats"),
    params:
        cohort=COHORT_JSON,
        classes=config["classes"],
    shell:
        command(
            "stats.py",
            "--cohort {params.cohort} --shard {wildcards.shard} --segmented {input.segmented}"
            " --uncertainty {input.uncertainty} --classes {params.classes} --output {output}",
        )


rule stats_summary:
    """The cohort's statistics in one table, outliers flagged by robust z-score, and progress
    counts (results/stats.tsv, results/stats_summary.json)."""
    input:
        shards=stage_outputs("stats"),
        invalid=INVALID_TABLE,
    output:
        table=report(
            "results/stats.tsv",
            caption="../report/stats_table.rst",
            category="Cohort statistics",
        ),
        summary="results/stats_summary.json",
    log:
        "logs/stats_summary.log",
    benchmark:
        "logs/benchmarks/stats_summary.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("stats_summary"),
    params:
        cohort=COHORT_JSON,
        classes=config["classes"],
        outlier_z=config["report"]["outlier_z"],
    shell:
        command(
            "stats_summary.py",
            "--cohort {params.cohort} --invalid {input.invalid} --classes {params.classes}"
            " --outlier-z {params.outlier_z} --table {output.table}"
            " --summary {output.summary}",
        )
