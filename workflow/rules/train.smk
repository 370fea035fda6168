# Training (one job): the patch stores of the train split, validation Dice on the val split, both
# found through the shard manifests (so the command line does not grow with the cohort). Its
# checkpoints live outside the declared outputs (Snakemake deletes those before a rerun), so a
# killed or requeued job resumes from results/.train_checkpoint/last.pt. Its conda environment
# adds Horovod's runtime dependencies to the pipeline's. With training.init_from (auto: when
# corrections changed the training set) it fine-tunes a kept model version instead of training
# from scratch.


rule train:
    """The network trained on the train split's patch stores, validated on the val split:
    results/model/best.pt (best validation Dice), last.pt, the training log and its curve.
    """
    input:
        plan=PLAN_INPUT,
        stores=stage_outputs("patches"),
        val=val_manifests(),
        parent=[INIT_FROM] if INIT_FROM else [],
    output:
        best=versions.TRAINED_MODEL,
        last="results/model/last.pt",
        log_tsv="results/model/training_log.tsv",
        curve="results/model/learning_curve.png",
    log:
        "logs/train.log",
    benchmark:
        "logs/benchmarks/train.tsv"
    conda:
        "../../envs/training.yaml"
    threads: rule_threads("train")
    resources:
        **cluster_resources("train"),
    params:
        launch=train_launcher(),
        cohort=COHORT_JSON,
        config=as_json(training_config(config)),
        out_dir=output_folder,
        checkpoint_dir=paths.TRAIN_CHECKPOINT_DIR,
        init_from=f"--init-from {INIT_FROM}" if INIT_FROM else "",
    shell:
        command(
            "train.py",
            "--plan {input.plan} --cohort {params.cohort} --config {params.config}"
            " --out-dir {params.out_dir} --checkpoint-dir {params.checkpoint_dir}"
            " {params.init_from}",
            prefix="{params.launch} ",
        )


# At a site of a real federation (README "A real federation"): the site's SuperNode inputs
# (its patch stores' list, its preprocessed validation subjects, the training config and the
# plan, by default the coordinator's: federated.plan) and supernode.sh, the command its admin
# runs; `snakemake site` makes them for every site of the sheet, running only the site's own
# jobs (validation, preprocessing, patches). The train job writes the same inputs itself.


rule supernode_inputs:
    """A site's SuperNode inputs (patch stores, validation subjects, training config, plan) and
    supernode.sh, the command its admin runs."""
    input:
        plan=PLAN_INPUT,
        stores=site_outputs("patches"),
        val=site_outputs("preprocess"),
    output:
        stores=paths.supernode_paths("{site}")["stores.txt"],
        val=paths.supernode_paths("{site}")["val.tsv"],
        config=paths.supernode_paths("{site}")["config.json"],
        plan=paths.supernode_paths("{site}")["plan.json"],
        script=paths.supernode_paths("{site}")["supernode.sh"],
    log:
        "logs/supernode_inputs/{site}.log",
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("supernode_inputs"),
    params:
        cohort=COHORT_JSON,
        config=as_json(training_config(config)),
    shell:
        command(
            "supernode_inputs.py",
            "--cohort {params.cohort} --site {wildcards.site} --config {params.config}"
            " --plan {input.plan}",
        )


rule site:
    """Target: every training site's SuperNode inputs (a real federation's site runs this)."""
    input:
        [paths.supernode_paths(site)["supernode.sh"] for site in TRAINING_SITES],
