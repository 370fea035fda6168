# The dataset fingerprint and the preprocessing plan (one job over the training subjects).
# Its inputs are ancient(): editing one subject's files must not re-plan (and so re-preprocess)
# the whole cohort. The plan reruns when the list of training subjects or the plan/model
# config changes (params), or on request with -R plan. It leaves out the training subjects that
# validation found invalid (on_invalid: skip); a later change of that verdict alone does not
# re-plan (the gate's files are ancient inputs). A model fine-tuned from another
# (training.init_from) keeps that model's plan, so that patches and segmentations stay
# comparable: corrected subjects are then left out of the plan's subjects (PLAN_SUBJECTS), and
# training refuses a parent made with another plan.
#
# With training.backend: federated each site fingerprints its own training subjects
# (site_fingerprint: aggregates only, no voxel, no subject id; results/sites/{site}/) and the
# plan job merges those fingerprints without opening an image (cohortseg.preprocessing.site_fingerprint).


rule site_fingerprint:
    input:
        images=site_plan_files("image"),
        labels=site_plan_files("label"),
        validated=ancient(VALIDATION_OK),
        invalid=ancient(INVALID_TABLE),
    output:
        paths.site_fingerprint_path("{site}"),
    log:
        "logs/site_fingerprint/{site}.log",
    benchmark:
        "logs/benchmarks/site_fingerprint/{site}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("site_fingerprint"),
    params:
        script=script("site_fingerprint.py"),
        members=lambda w: PLAN_SITES[w.site],
        cohort=COHORT_JSON,
        init_from=as_json(config["training"]["init_from"]),
    shell:
        "python {params.script} --cohort {params.cohort} --invalid {input.invalid}"
        " --site {wildcards.site} --init-from {params.init_from} --fingerprint {output}"
        " > {log} 2>&1"


rule plan:
    input:
        images=plan_files("image"),
        labels=plan_files("label"),
        sites=SITE_FINGERPRINTS,
        validated=ancient(VALIDATION_OK),
        invalid=ancient(INVALID_TABLE),
    output:
        fingerprint=paths.FINGERPRINT,
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
        config=as_json(plan_config(config)),
    shell:
        "python {params.script} --cohort {params.cohort} --invalid {input.invalid}"
        " --config {params.config} --site-fingerprints {input.sites}"
        " --fingerprint {output.fingerprint} --plan {output.plan}"
        " > {log} 2>&1"
