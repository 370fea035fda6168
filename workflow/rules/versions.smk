# Model versions: the model this run trained is kept as results/models/v{N}/ with its lineage
# (parent, training subjects' hash, config), which version is current is written to
# current.json, and, once the cohort is evaluated, the current version's val/test Dice is
# recorded and every version compared. The version folders are not declared outputs: Snakemake
# never deletes a kept version.


rule model_version:
    input:
        best="results/model/best.pt",
        log_tsv="results/model/training_log.tsv",
    output:
        versions.CURRENT,
    log:
        "logs/model_version.log",
    benchmark:
        "logs/benchmarks/model_version.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("model_version"),
    params:
        script=script("model_version.py"),
        model_dir=lambda w, input: os.path.dirname(input.best),
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
        models_dir=lambda w, output: os.path.dirname(output[0]),
    shell:
        "python {params.script} --model-dir {params.model_dir} {params.parent}"
        " --training-subjects-hash {params.train_hash} --config {params.config}"
        " {params.model_version} --models-dir {params.models_dir} > {log} 2>&1"


rule model_versions:
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
    container:
        CONTAINER
    resources:
        **cluster_resources("model_versions"),
    params:
        script=script("model_versions.py"),
        classes=config["classes"],
    shell:
        "python {params.script} --metrics {input.metrics} --current {input.current}"
        " --classes {params.classes} --table {output.table} --figure {output.figure}"
        " > {log} 2>&1"
