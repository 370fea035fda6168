# Inference in shards: one job per shard loads the model once, writes each subject's
# segmentation and, last, the shard's manifest (subject, segmentation, SHA-256), which is the
# job's one declared output. All shards are jobs of this one rule, so the SLURM executor submits
# them as one job array. A segmentation deleted from a finished shard makes that shard run
# again (incomplete marker). The model is the one this run trains, or the kept version
# that model_version names.


rule infer:
    input:
        model=INFERENCE_MODEL,
        images=member_files("infer", "image"),
        validated=wf.validation_shard_path("{shard}"),
        incomplete=incomplete_marker("infer", "segmentation"),
    output:
        inference_manifest("{shard}"),
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
    shell:
        "python {params.script} --cohort {params.cohort} --shard {wildcards.shard}"
        " --checkpoint {input.model} --inference {params.inference}"
        " --manifest {output} > {log} 2>&1"
