# Validation of every subject before any expensive work, in shards, then one table and a gate.
# A shard is validated when it is new or its members change (params); its files are ancient()
# inputs because Snakemake 9 skips the timestamp check of every job downstream of a pending
# ancient() input, so re-validating on each edit would stop an edited label from re-running its
# preprocessing. A file edited later is checked where it is read (preprocess, infer: errors name
# the subject and the file), or re-validated with -R validate. With training.backend: federated
# a shard holds one site's subjects and its table goes to results/sites/{site}/qc/validation/:
# a job of that site.


rule validate:
    """A shard's subjects checked (files readable, geometry, label values, image and label on
    one grid): one line per problem in the shard's validation table."""
    input:
        # Validation opens every file itself (a missing one is a reported problem), so the
        # files of a real cohort are not inputs here: 50,000 fewer paths to plan. The demo's
        # are, since a rule makes them. ancient(): see above.
        images=validate_files("image"),
        labels=validate_files("label"),
        converted=validate_converted,
    output:
        paths.validation_shard_path("{shard}", SITE),
    log:
        by_site("logs/validate/{shard}.log"),
    benchmark:
        by_site("logs/benchmarks/validate/{shard}.tsv")
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("validate"),
    params:
        members=members("validate"),
        cohort=COHORT_JSON,
        validation=as_json(config["validation"]),
        n_classes=N_CLASSES,
    shell:
        command(
            "validate.py",
            "--cohort {params.cohort} --shard {wildcards.shard}"
            " --validation {params.validation} --n-classes {params.n_classes} --output {output}",
        )


rule validation_table:
    """Every shard's problems in one table (results/qc/invalid_subjects.tsv)."""
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
    resources:
        **cluster_resources("validation_table"),
    params:
        cohort=COHORT_JSON,
    shell:
        command("validation_table.py", "--cohort {params.cohort} --output {output}")


# `plan` takes the gate's marker as ancient(): it orders everything expensive after validation
# (preprocessing follows the plan, training the patches, inference the model), while a
# re-validation alone reruns nothing. Only `plan` takes it: a job with an ancient input that
# another job is about to remake ignores the timestamps of its other inputs in Snakemake 9.
rule validation_gate:
    """Stops the run listing every problem (validation.on_invalid: fail), or lets it go on
    without the invalid subjects (skip)."""
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
    resources:
        **cluster_resources("validation_gate"),
    params:
        on_invalid=config["validation"]["on_invalid"],
    shell:
        command(
            "validation_gate.py",
            "--table {input} --on-invalid {params.on_invalid} --ok {output}",
        )
