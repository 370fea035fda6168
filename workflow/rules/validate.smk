# Validation of every subject before any expensive work, in shards, then one table and a gate.
# A shard is validated when it is new or its members change (params); its files are ancient()
# inputs because Snakemake 9 skips the timestamp check of every job downstream of a pending
# ancient() input, so re-validating on each edit would stop an edited label from re-running its
# preprocessing. A file edited later is checked where it is read (preprocess, infer: errors name
# the subject and the file), or re-validated with -R validate. With training.backend: federated
# a shard holds one site's subjects and its table goes to results/sites/{site}/qc/validation/:
# a job of that site.


rule validate:
    input:
        # Validation opens every file itself (a missing one is a reported problem), so the
        # files of a real cohort are not inputs here: 50,000 fewer paths to plan. The demo's
        # are, since a rule makes them. ancient(): see above.
        images=lambda w: [
            ancient(p)
            for p in made_by_rules(BY_ID[s].image for s in members("validate")(w))
        ],
        labels=lambda w: [
            ancient(p)
            for p in made_by_rules(BY_ID[s].label for s in members("validate")(w))
        ],
        converted=lambda w: converted(members("validate")(w), w.shard),
    output:
        paths.validation_shard_path("{shard}", SITE),
    log:
        by_site("logs/validate/{shard}.log"),
    benchmark:
        by_site("logs/benchmarks/validate/{shard}.tsv")
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("validate"),
    params:
        script=script("validate.py"),
        members=members("validate"),
        cohort=COHORT_JSON,
        validation=as_json(config["validation"]),
        n_classes=N_CLASSES,
    shell:
        "python {params.script} --cohort {params.cohort} --shard {wildcards.shard}"
        " --validation {params.validation} --n-classes {params.n_classes}"
        " --output {output} > {log} 2>&1"


rule validation_table:
    input:
        stage_outputs("validate"),
    output:
        INVALID_TABLE,
    log:
        "logs/validation_table.log",
    benchmark:
        "logs/benchmarks/validation_table.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("validation_table"),
    params:
        script=script("validation_table.py"),
        cohort=COHORT_JSON,
    shell:
        "python {params.script} --cohort {params.cohort} --output {output} > {log} 2>&1"


# `plan` takes the gate's marker as ancient(): it orders everything expensive after validation
# (preprocessing follows the plan, training the patches, inference the model), while a
# re-validation alone reruns nothing. Only `plan` takes it: a job with an ancient input that
# another job is about to remake ignores the timestamps of its other inputs in Snakemake 9.
rule validation_gate:
    input:
        INVALID_TABLE,
    output:
        VALIDATION_OK,
    log:
        "logs/validation_gate.log",
    benchmark:
        "logs/benchmarks/validation_gate.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("validation_gate"),
    params:
        script=script("validation_gate.py"),
        on_invalid=config["validation"]["on_invalid"],
    shell:
        "python {params.script} --table {input} --on-invalid {params.on_invalid}"
        " --ok {output} > {log} 2>&1"
