# Labelled subjects, in shards: preprocessing onto the plan's grid, then patches into one HDF5
# store per training subject. One job loads torch once for a whole shard. Each job's declared
# output is its shard's manifest (written last); a file deleted from a finished shard, or a
# damaged store, makes that shard run again (markers), and replacing one subject's label
# reruns its shard only. A job leaves out the subjects its validation shard found invalid
# (on_invalid: skip) and lists only what it wrote. With training.backend: federated a shard holds
# one site's subjects and writes into results/sites/{site}/ (manifests, preprocessed files,
# patch stores): a job of that site.


rule preprocess:
    input:
        images=member_files("preprocess", "image"),
        labels=member_files("preprocess", "label"),
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
    container:
        CONTAINER
    resources:
        **cluster_resources("preprocess"),
    params:
        script=script("preprocess.py"),
        members=members("preprocess"),
        cohort=COHORT_JSON,
        tolerance=config["validation"]["affine_tolerance_mm"],
    shell:
        "python {params.script} --cohort {params.cohort} --shard {wildcards.shard}"
        " --plan {input.plan} --affine-tolerance-mm {params.tolerance}"
        " --manifest {output} > {log} 2>&1"


rule patches:
    input:
        preprocessed=paths.preprocessed_manifest_path("{shard}", SITE),
        plan=PLAN_INPUT,
        incomplete=incomplete_marker("patches", "store"),
        damaged=damaged_store_marker,
    output:
        paths.patch_manifest_path("{shard}", SITE),
    log:
        by_site("logs/patches/{shard}.log"),
    benchmark:
        by_site("logs/benchmarks/patches/{shard}.tsv")
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("patches"),
    params:
        script=script("patches.py"),
        members=members("patches"),
        patches=as_json(config["patches"]),
    shell:
        "python {params.script} --preprocessed {input.preprocessed} --plan {input.plan}"
        " --patches {params.patches} --manifest {output} > {log} 2>&1"
