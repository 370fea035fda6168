# Training (one job): patch stores of the train split, validation on the val split. Its
# checkpoints live outside the declared outputs (Snakemake deletes those before a rerun), so a
# killed or requeued job resumes from results/.train_checkpoint/last.pt.


rule train:
    input:
        plan="results/plan/plan.json",
        stores=expand("results/patches/{subject}.h5", subject=TRAIN),
        val=expand(
            "results/preprocessed/{subject}/{kind}",
            subject=VAL,
            kind=("image.nii", "label.nii.gz"),
        ),
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
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    threads: rule_threads("train")
    resources:
        **cluster_resources("train"),
    params:
        script=script("train.py"),
        launch=train_launcher(),
        val=as_json(
            [
                {
                    "subject": s,
                    "image": f"results/preprocessed/{s}/image.nii",
                    "label": f"results/preprocessed/{s}/label.nii.gz",
                }
                for s in VAL
            ]
        ),
        config=as_json({k: config[k] for k in ("model", "training", "inference")}),
    shell:
        "{params.launch} python {params.script} --plan {input.plan} --stores {input.stores}"
        " --val {params.val} --config {params.config} --out-dir results/model"
        " --checkpoint-dir results/.train_checkpoint > {log} 2>&1"
