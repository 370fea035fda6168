# Labelled subjects, in shards: preprocessing onto the plan's grid, then patches into one HDF5
# store per training subject. One job loads torch once for a whole shard. Each job's declared
# output is its shard's manifest (written last); a file deleted from a finished shard, or a
# damaged store (not the size its manifest records), makes that shard run again (rerun
# markers), and replacing one subject's label reruns its shard only. A job leaves out the
# subjects its validation shard found invalid (on_invalid: skip) and lists only what it wrote.
# With training.backend: federated a shard holds one site's subjects and writes into
# results/sites/{site}/ (manifests, preprocessed files, patch stores): a job of that site.


rule preprocess:
    """A shard's labelled subjects resampled, cropped and normalised onto the plan's grid, and
    the shard's preprocessing manifest."""
    input:
        files=member_files("preprocess", "image", "label"),
        plan=PLAN_INPUT,
        validated=paths.validation_shard_path("{shard}", SITE),
        incomplete=incomplete_marker("preprocess", "image", "label", "geometry"),
    output:
        paths.preprocessed_manifest_path("{shard}", SITE),
    log:
        by_site("logs/preprocess/{shard}.log"),
    benchmark:
        by_site("logs/benchmarks/preprocess/{shard}.tsv")
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("preprocess"),
    params:
        members=members("preprocess"),
        sources=member_digest("preprocess", "image", "label"),
        cohort=COHORT_JSON,
        tolerance=config["validation"]["affine_tolerance_mm"],
    shell:
        command(
            "preprocess.py",
            "--cohort {params.cohort} --shard {wildcards.shard} --plan {input.plan}"
            " --affine-tolerance-mm {params.tolerance} --manifest {output}",
        )


rule patches:
    """One HDF5 patch store per training subject of a shard (patches drawn around the labels),
    and the shard's patch manifest (store, size, SHA-256)."""
    input:
        preprocessed=paths.preprocessed_manifest_path("{shard}", SITE),
        plan=PLAN_INPUT,
        # a store deleted, or damaged (cut short: not the size the manifest records)
        incomplete=incomplete_marker("patches", "store"),
    output:
        paths.patch_manifest_path("{shard}", SITE),
    log:
        by_site("logs/patches/{shard}.log"),
    benchmark:
        by_site("logs/benchmarks/patches/{shard}.tsv")
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("patches"),
    params:
        members=members("patches"),
        patches=as_json(config["patches"]),
    shell:
        command(
            "patches.py",
            "--preprocessed {input.preprocessed} --plan {input.plan}"
            " --patches {params.patches} --manifest {output}",
        )
