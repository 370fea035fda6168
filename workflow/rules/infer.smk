# Inference in shards: one job per shard loads the model once, writes each subject's
# segmentation (and, with inference.uncertainty_maps, its uncertainty map), the shard's
# uncertainty table and, last, the shard's manifest (subject, segmentation, SHA-256). All
# shards are jobs of this one rule, so the SLURM executor submits them as one job array. A
# segmentation (or uncertainty map) deleted from a finished shard makes that shard run again
# (incomplete markers). The model is the one this run trains, or the kept version that
# model_version names.


rule infer:
    input:
        model=INFERENCE_MODEL,
        images=member_files("infer", "image"),
        validated=lambda w: COHORT.stage_output("validate", w.shard),
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
    container:
        CONTAINER
    threads: rule_threads("infer")
    resources:
        **cluster_resources("infer"),
    params:
        script=script("infer.py"),
        members=members("infer"),
        cohort=COHORT_JSON,
        inference=as_json(config["inference"]),
        classes=config["classes"],
    shell:
        "python {params.script} --cohort {params.cohort} --shard {wildcards.shard}"
        " --checkpoint {input.model} --inference {params.inference}"
        " --classes {params.classes} --uncertainty {output.uncertainty}"
        " --manifest {output.manifest} > {log} 2>&1"
