# Inference in shards: one job per shard of inference.shard_size subjects loads the model once,
# writes each subject's segmentation and, last, the shard's manifest (subject, segmentation,
# SHA-256), which is the job's one declared output. All shards are jobs of this one rule, so the
# SLURM executor can submit them as one job array (--slurm-array-jobs infer). A segmentation
# deleted from a finished shard makes that shard run again (incomplete_shard_marker).


rule infer:
    input:
        model="results/model/best.pt",
        images=lambda w: tracked(BY_ID[s].image for s in SHARD_OF[w.shard]),
        incomplete=incomplete_shard_marker,
    output:
        inference_manifest("{shard}"),
    log:
        "logs/infer/{shard}.log",
    benchmark:
        "logs/benchmarks/infer/{shard}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    threads: rule_threads("infer")
    resources:
        **cluster_resources("infer"),
    params:
        script=script("infer.py"),
        subjects=lambda w: SHARD_OF[w.shard],
        images=lambda w: [BY_ID[s].image for s in SHARD_OF[w.shard]],
        segmentations=lambda w: [segmentation(s) for s in SHARD_OF[w.shard]],
        inference=as_json(config["inference"]),
    shell:
        "python {params.script} --checkpoint {input.model} --subjects {params.subjects}"
        " --images {params.images} --outputs {params.segmentations}"
        " --manifest {output} --inference {params.inference} > {log} 2>&1"
