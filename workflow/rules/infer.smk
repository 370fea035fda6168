# Inference in shards: one job per shard of inference.shard_size subjects loads the model once
# and writes each subject's segmentation, which Snakemake tracks one by one. Snakemake outputs
# cannot be functions of wildcards, so each shard is its own rule (procedural rule definition):
# deleting one segmentation reruns only its shard.

for shard_id, members in SHARD_OF.items():

    rule:
        name:
            f"infer_{shard_id}"
        input:
            model="results/model/best.pt",
            images=tracked(BY_ID[s].image for s in members),
        output:
            segmentations=[segmentation(s) for s in members],
            manifest=inference_manifest(shard_id),
        log:
            f"logs/infer/{shard_id}.log",
        benchmark:
            f"logs/benchmarks/infer/{shard_id}.tsv"
        conda:
            "../../envs/cohortseg.yaml"
        container:
            CONTAINER
        threads: rule_threads("infer")
        resources:
            **cluster_resources("infer"),
        params:
            script=script("infer.py"),
            subjects=members,
            images=[BY_ID[s].image for s in members],
            inference=as_json(config["inference"]),
        shell:
            "python {params.script} --checkpoint {input.model} --subjects {params.subjects}"
            " --images {params.images} --outputs {output.segmentations}"
            " --manifest {output.manifest} --inference {params.inference}"
            " > {log} 2>&1"
