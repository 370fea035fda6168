# Training (one job): the patch stores of the train split, validation Dice on the val split, both
# found through the shard manifests (so the command line does not grow with the cohort). Its
# checkpoints live outside the declared outputs (Snakemake deletes those before a rerun), so a
# killed or requeued job resumes from results/.train_checkpoint/last.pt. Its conda environment
# adds Horovod's runtime dependencies to the pipeline's. With training.init_from (auto: when
# corrections changed the training set) it fine-tunes a kept model version instead of training
# from scratch.


rule train:
    input:
        plan=PLAN_INPUT,
        stores=stage_outputs("patches"),
        val=[
            COHORT.stage_output("preprocess", shard)
            for shard, ids in STAGE_SHARDS["preprocess"].items()
            if any(BY_ID[s].split == "val" for s in ids)
        ],
        parent=[INIT_FROM] if INIT_FROM else [],
    output:
        best="results/model/best.pt",
        last="results/model/last.pt",
        log_tsv="results/model/training_log.tsv",
        curve="results/model/learning_curve.png",
    log:
        "logs/train.log",
    benchmark:
        "logs/benchmarks/train.tsv"
    conda:
        "../../envs/training.yaml"
    container:
        CONTAINER
    threads: rule_threads("train")
    resources:
        **cluster_resources("train"),
    params:
        script=script("train.py"),
        launch=train_launcher(),
        cohort=COHORT_JSON,
        config=as_json(training_config(config)),
        out_dir=lambda w, output: os.path.dirname(output.best),
        checkpoint_dir=paths.TRAIN_CHECKPOINT_DIR,
        init_from=f"--init-from {INIT_FROM}" if INIT_FROM else "",
    shell:
        "{params.launch} python {params.script} --plan {input.plan} --cohort {params.cohort}"
        " --config {params.config} --out-dir {params.out_dir}"
        " --checkpoint-dir {params.checkpoint_dir} {params.init_from} > {log} 2>&1"


# At a site of a real federation (README "A real federation"): the site's SuperNode inputs
# (its patch stores' list, its preprocessed validation subjects, the training config and the
# plan, by default the coordinator's: federated.plan) and supernode.sh, the command its admin
# runs; `snakemake site` makes them for every site of the sheet, running only the site's own
# jobs (validation, preprocessing, patches). The train job writes the same inputs itself.


rule supernode_inputs:
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
    container:
        CONTAINER
    resources:
        **cluster_resources("supernode_inputs"),
    params:
        script=script("supernode_inputs.py"),
        cohort=COHORT_JSON,
        config=as_json(training_config(config)),
    shell:
        "python {params.script} --cohort {params.cohort} --site {wildcards.site}"
        " --config {params.config} --plan {input.plan} > {log} 2>&1"


rule site:
    input:
        [paths.supernode_paths(site)["supernode.sh"] for site in TRAINING_SITES],
