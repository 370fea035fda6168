# Evaluation in shards (the inference shards), then one table and summary for the cohort.


rule evaluate:
    """A shard's segmentations scored against their labels: Dice, HD95 and class volumes."""
    input:
        # The shard's manifest stands for its segmentations (it is written after all of them),
        # so that each segmentation is named by two rules only (its shard and `all`): planning
        # 50,000 subjects stays fast.
        segmented=inference_manifest("{shard}"),
        labels=member_files("infer", "label"),
    output:
        paths.metrics_shard_path("{shard}"),
    log:
        "logs/evaluate/{shard}.log",
    benchmark:
        "logs/benchmarks/evaluate/{shard}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("evaluate"),
    params:
        sources=member_digest("infer", "label"),
        cohort=COHORT_JSON,
        classes=config["classes"],
        tolerance=config["validation"]["affine_tolerance_mm"],
    shell:
        command(
            "evaluate.py",
            "--cohort {params.cohort} --shard {wildcards.shard} --segmented {input.segmented}"
            " --classes {params.classes} --affine-tolerance-mm {params.tolerance}"
            " --output {output}",
        )


rule summarise:
    """Every shard's metrics in one table (results/metrics.tsv) and their summary per split."""
    input:
        shards=stage_outputs("evaluate"),
        invalid=INVALID_TABLE,
    output:
        metrics="results/metrics.tsv",
        summary="results/summary.json",
    log:
        "logs/summarise.log",
    benchmark:
        "logs/benchmarks/summarise.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("summarise"),
    params:
        cohort=COHORT_JSON,
        classes=config["classes"],
    shell:
        command(
            "summarise.py",
            "--cohort {params.cohort} --invalid {input.invalid} --classes {params.classes}"
            " --metrics {output.metrics} --summary {output.summary}",
        )
