# cohortseg: segment a whole cohort of 3D images, from NIfTI to segmentations and metrics.
from snakemake.utils import min_version, validate

from cohortseg.workflow.presets import apply_preset
from cohortseg.workflow.config import coerce_to_schema, load_schema, load_yaml

min_version("9.0")


configfile: f"{workflow.basedir}/config.yaml"


coerce_to_schema(
    config, load_schema(f"{workflow.basedir}/workflow/schemas/config.schema.yaml")
)
validate(config, "workflow/schemas/config.schema.yaml")
# training.preset (auto: demo or cohort; nnunet) replaces the defaults of config.yaml (not the
# values the user set); the config must still be valid
config.update(apply_preset(config, load_yaml(f"{workflow.basedir}/config.yaml")))
validate(config, "workflow/schemas/config.schema.yaml")


# Every rule runs in this Apptainer image with --software-deployment-method apptainer (a .sif
# path or an oras:// / docker:// URI; null: none), or in its conda environment.
container: config["container"]


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/privacy.smk"
include: "workflow/rules/corrections.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/versions.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/meshes.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/review.smk"
include: "workflow/rules/wsi.smk"
include: "workflow/rules/reruns.smk"


# Small gathering steps run where snakemake runs (on a cluster: the submit host) instead of as
# jobs of their own: each reads a few tables or writes a few files, and a queued job would wait
# longer than it runs. Everything that touches images runs as (array) jobs.
localrules:
    all,
    demo_subject,
    validation_table,
    validation_gate,
    model_version,
    summarise,
    stats_summary,
    supernode_inputs,
    run_config,
    rerun_marker,


rule all:
    """The whole pipeline on the cohort: segmentations, metrics, statistics, the report, the
    review package and the model versions (get_final_output in common.smk)."""
    default_target: True
    input:
        get_final_output(),
