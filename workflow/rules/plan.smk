# The dataset fingerprint and the preprocessing plan (one job over the training subjects).
# Its inputs are ancient(): editing one subject's files must not re-plan (and so re-preprocess)
# the whole cohort. The plan reruns when the list of training subjects or the plan/model
# config changes (params), or on request with -R plan. It leaves out the training subjects that
# validation found invalid (on_invalid: skip); a later change of that verdict alone does not
# re-plan (the gate's files are ancient inputs). A model fine-tuned from another
# (training.init_from) keeps that model's plan, so that patches and segmentations stay
# comparable: corrected subjects are then left out of the plan's subjects (PLAN_SUBJECTS), and
# training refuses a parent made with another plan. Only files a rule makes are inputs (the
# demo's, checked corrections): a real cohort's own files exist before the run starts.
#
# With training.backend: federated each site fingerprints its own training subjects
# (site_fingerprint: aggregates only, no voxel, no subject id; results/sites/{site}/) and the
# plan job merges those fingerprints without opening an image
# (cohortseg.preprocessing.site_fingerprint).


rule site_fingerprint:
    """A site's fingerprint of its training subjects (aggregates only: no voxel, no id), which
    the federated plan merges."""
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
    resources:
        **cluster_resources("site_fingerprint"),
    params:
        members=site_plan_members,
        cohort=COHORT_JSON,
        init_from=as_json(config["training"]["init_from"]),
    shell:
        command(
            "site_fingerprint.py",
            "--cohort {params.cohort} --invalid {input.invalid} --site {wildcards.site}"
            " --init-from {params.init_from} --fingerprint {output}",
        )


rule plan:
    """The dataset fingerprint of the training subjects and the preprocessing plan (target
    spacing, patch size, normalisation, network) that every later stage follows."""
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
    resources:
        **cluster_resources("plan"),
    params:
        members=PLAN_SUBJECTS,
        cohort=COHORT_JSON,
        config=as_json(plan_config(config)),
    shell:
        command(
            "plan.py",
            "--cohort {params.cohort} --invalid {input.invalid} --config {params.config}"
            " --site-fingerprints {input.sites} --fingerprint {output.fingerprint}"
            " --plan {output.plan}",
        )
