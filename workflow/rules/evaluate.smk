# Evaluation in shards (the inference shards), then one table and summary for the cohort.


def evaluate_items(wildcards):
    return [
        {
            "subject": s,
            "split": BY_ID[s].split,
            "segmentation": segmentation(s),
            "label": BY_ID[s].label,
        }
        for s in SHARD_OF[wildcards.shard]
    ]


rule evaluate:
    input:
        segmentations=lambda w: [segmentation(s) for s in SHARD_OF[w.shard]],
        labels=lambda w: [BY_ID[s].label for s in SHARD_OF[w.shard] if BY_ID[s].label],
    output:
        "results/metrics/{shard}.tsv",
    params:
        subjects=lambda w: as_json(evaluate_items(w)),
        classes=config["classes"],
    log:
        "logs/evaluate/{shard}.log",
    benchmark:
        "logs/benchmarks/evaluate/{shard}.tsv"
    shell:
        "python scripts/evaluate.py --subjects {params.subjects} --classes {params.classes}"
        " --output {output} > {log} 2>&1"


rule summarise:
    input:
        expand("results/metrics/{shard}.tsv", shard=SHARD_IDS),
    output:
        metrics="results/metrics.tsv",
        summary="results/summary.json",
    params:
        classes=config["classes"],
    log:
        "logs/summarise.log",
    benchmark:
        "logs/benchmarks/summarise.tsv"
    shell:
        "python scripts/summarise.py --shards {input} --classes {params.classes}"
        " --metrics {output.metrics} --summary {output.summary} > {log} 2>&1"
