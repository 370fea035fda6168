# Inference in shards: one job per shard loads the model once, writes each subject's
# segmentation (and, with inference.uncertainty_maps, its uncertainty map), the shard's
# uncertainty table and, last, the shard's manifest (subject, segmentation, SHA-256, and the
# model's SHA-256). All shards are jobs of this one rule, so the SLURM executor submits them as
# one job array. A segmentation (or uncertainty map) deleted from a finished shard makes that
# shard run again (rerun markers). The model is the registry's: the one this run trains, or
# the kept version that model_version names (INFERENCE_MODEL).


rule infer:
    """A shard's subjects segmented with the model in use (sliding window, optional TTA), their
    uncertainty scores, and the shard's manifest naming the model's SHA-256."""
    input:
        model=INFERENCE_MODEL,
        images=member_files("infer", "image"),
        validated=validation_shard,
        incomplete=incomplete_marker("infer", "segmentation"),
        incomplete_maps=incomplete_marker(
            "infer", "uncertainty_map", table=paths.uncertainty_shard_path
        ),
    output:
        manifest=inference_manifest("{shard}"),
        uncertainty=paths.uncertainty_shard_path("{shard}"),
    log:
        "logs/infer/{shard}.log",
    benchmark:
        "logs/benchmarks/infer/{shard}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    threads: rule_threads("infer")
    resources:
        **cluster_resources("infer"),
    params:
        members=members("infer"),
        sources=member_digest("infer", "image"),
        cohort=COHORT_JSON,
        inference=as_json(config["inference"]),
        classes=config["classes"],
    shell:
        command(
            "infer.py",
            "--cohort {params.cohort} --shard {wildcards.shard} --checkpoint {input.model}"
            " --inference {params.inference} --classes {params.classes}"
            " --uncertainty {output.uncertainty} --manifest {output.manifest}",
        )
