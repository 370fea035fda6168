# Optional surface meshes of the segmentations (config meshes.enabled), per inference shard.


MESHES = stage_outputs("meshes") if config["meshes"]["enabled"] else []


# Surface meshes, one job per inference shard, all jobs of one rule (as for inference): the
# declared output is the shard's mesh manifest; a mesh deleted from a finished shard makes that
# shard run again (rerun marker).
rule meshes:
    """Surface meshes of a shard's segmentations, one per subject and class (LPS mm), and the
    shard's mesh manifest."""
    input:
        segmented=inference_manifest("{shard}"),  # stands for the shard's segmentations
        incomplete=incomplete_marker("meshes", "mesh"),
    output:
        meshes_manifest("{shard}"),
    log:
        "logs/meshes/{shard}.log",
    benchmark:
        "logs/benchmarks/meshes/{shard}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("meshes"),
    params:
        classes=config["classes"],
        format=config["meshes"]["format"],
        smoothing=config["meshes"]["smoothing_iterations"],
    shell:
        command(
            "meshes.py",
            "--segmented {input.segmented} --classes {params.classes}"
            " --format {params.format} --manifest {output}"
            " --smoothing-iterations {params.smoothing}",
        )
