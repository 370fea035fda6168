# Evaluation in shards (the inference shards), then one table and summary for the cohort.


rule evaluate:
    input:
        # The shard's manifest stands for its segmentations (it is written after all of them),
        # so that each segmentation is named by two rules only (its shard and `all`): planning
        # 50,000 subjects stays fast.
        manifest=lambda w: inference_manifest(w.shard),
        labels=lambda w: [BY_ID[s].label for s in SHARD_OF[w.shard] if BY_ID[s].label],
    output:
        "results/metrics/{shard}.tsv",
    log:
        "logs/evaluate/{shard}.log",
    benchmark:
        "logs/benchmarks/evaluate/{shard}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("evaluate"),
    params:
        script=script("evaluate.py"),
        subjects=lambda w: as_json(evaluate_items(w)),
        classes=config["classes"],
    shell:
        "python {params.script} --subjects {params.subjects} --classes {params.classes}"
        " --output {output} > {log} 2>&1"


rule summarise:
    input:
        shards=expand("results/metrics/{shard}.tsv", shard=SHARD_IDS),
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
    container:
        CONTAINER
    resources:
        **cluster_resources("summarise"),
    params:
        script=script("summarise.py"),
        classes=config["classes"],
    shell:
        "python {params.script} --shards {input.shards} --invalid {input.invalid} --classes {params.classes}"
        " --metrics {output.metrics} --summary {output.summary} > {log} 2>&1"
