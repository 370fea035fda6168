# Model versions: the model this run trained is kept as results/models/v{N}/ with its lineage
# (parent, training subjects' hash, config), which version is current is written to
# current.json, and, once the cohort is evaluated, the current version's val/test Dice is
# recorded and every version compared. The version folders are not declared outputs: Snakemake
# never deletes a kept version. Which checkpoint a rule uses is the registry's answer
# (INFERENCE_MODEL in common.smk: cohortseg.workflow.registry.inference_checkpoint).


rule model_version:
    """The model this run trained kept as the next version (unless kept already) with its
    lineage and a MONAI bundle, and the current version (model_version, else the newest).
    """
    input:
        best=versions.TRAINED_MODEL,
        log_tsv="results/model/training_log.tsv",
    output:
        versions.CURRENT,
    log:
        "logs/model_version.log",
    benchmark:
        "logs/benchmarks/model_version.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("model_version"),
    params:
        model_dir=input_folder,
        parent=(
            f"--parent {versions.version_of_checkpoint(INIT_FROM)}"
            if versions.version_of_checkpoint(INIT_FROM)
            else ""
        ),
        model_version=(
            f"--model-version {config['model_version']}"
            if config["model_version"]
            else ""
        ),
        train_hash=TRAIN_HASH,
        config=as_json(
            {k: config[k] for k in ("classes", "model", "training", "inference")}
        ),
        models_dir=output_folder,
    shell:
        command(
            "model_version.py",
            "--model-dir {params.model_dir} {params.parent}"
            " --training-subjects-hash {params.train_hash} --config {params.config}"
            " {params.model_version} --models-dir {params.models_dir}",
        )


rule model_versions:
    """Every kept version compared: its lineage and val/test Dice (results/models/versions.tsv)
    and a figure for the report."""
    input:
        metrics="results/metrics.tsv",
        current=versions.CURRENT,
    output:
        table=versions.VERSIONS_TABLE,
        figure=report(
            "results/report/model_versions.png",
            caption="../report/model_versions.rst",
            category="Training",
        ),
    log:
        "logs/model_versions.log",
    benchmark:
        "logs/benchmarks/model_versions.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("model_versions"),
    params:
        classes=config["classes"],
    shell:
        command(
            "model_versions.py",
            "--metrics {input.metrics} --current {input.current} --classes {params.classes}"
            " --table {output.table} --figure {output.figure}",
        )
