# The dataset fingerprint and the preprocessing plan (one job over the training subjects).
# Its inputs are ancient(): editing one subject's files must not re-plan (and so re-preprocess)
# the whole cohort. The plan reruns when the list of training subjects or the plan/model
# config changes (params), or on request with -R plan. It leaves out the training subjects that
# validation found invalid (on_invalid: skip); a later change of that verdict alone does not
# re-plan (the gate's files are ancient inputs). A model fine-tuned from another
# (training.init_from) keeps that model's plan, so that patches and segmentations stay
# comparable: corrected subjects are then left out of the plan's subjects (PLAN_SUBJECTS), and
# training refuses a parent made with another plan.


rule plan:
    input:
        images=[ancient(p) for p in tracked(BY_ID[s].image for s in PLAN_SUBJECTS)],
        labels=[ancient(p) for p in tracked(BY_ID[s].label for s in PLAN_SUBJECTS)],
        validated=ancient(VALIDATION_OK),
        invalid=ancient(INVALID_TABLE),
    output:
        fingerprint=wf.FINGERPRINT,
        plan=PLAN,
    log:
        "logs/plan.log",
    benchmark:
        "logs/benchmarks/plan.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("plan"),
    params:
        script=script("plan.py"),
        members=PLAN_SUBJECTS,
        cohort=COHORT_JSON,
        config=as_json(
            {
                **{k: config[k] for k in ("plan", "model", "classes")},
                "init_from": config["training"]["init_from"],
            }
        ),
    shell:
        "python {params.script} --cohort {params.cohort} --invalid {input.invalid}"
        " --config {params.config} --fingerprint {output.fingerprint} --plan {output.plan}"
        " > {log} 2>&1"
