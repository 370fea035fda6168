# What users look at: QC montages and the pages and figures that `snakemake --report
# results/report.html` gathers (outputs marked report(), captions in workflow/report/).
from cohortseg.core.io import read_json
from cohortseg.workflow.config import write_shown_config


report: "../report/workflow.rst"


rule qc_montages:
    input:
        stats="results/stats.tsv",
        metrics="results/metrics.tsv",
    output:
        report(
            directory("results/qc/montages"),
            patterns=["{subject}.png"],
            caption="../report/qc_montage.rst",
            category="QC montages",
            labels=lambda w: {
                "subject": w.subject,
                **read_json("results/qc/montages/selection.json")[w.subject],
            },
        ),
    log:
        "logs/qc_montages.log",
    benchmark:
        "logs/benchmarks/qc_montages.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("qc_montages"),
    params:
        script=script("qc_montages.py"),
        classes=config["classes"],
        report=as_json(config["report"]),
        cohort=COHORT_JSON,
    shell:
        "python {params.script} --stats {input.stats} --metrics {input.metrics}"
        " --classes {params.classes} --report {params.report} --cohort {params.cohort}"
        " --out-dir {output}"
        " > {log} 2>&1"


# Grad-CAM of one class over the montage slices of the same subjects.
rule explanations:
    input:
        model="results/model/best.pt",
        montages="results/qc/montages",
        stats="results/stats.tsv",
    output:
        report(
            directory("results/qc/explanations"),
            patterns=["{subject}.png"],
            caption="../report/explanation.rst",
            category="Explanations",
            labels=lambda w: {
                "subject": w.subject,
                **read_json("results/qc/montages/selection.json")[w.subject],
            },
        ),
    log:
        "logs/explanations.log",
    benchmark:
        "logs/benchmarks/explanations.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    threads: rule_threads("infer")
    resources:
        **cluster_resources("infer"),
    params:
        script=script("explanations.py"),
        report=as_json(config["report"]),
        cohort=COHORT_JSON,
        device=config["inference"]["device"],
    shell:
        "python {params.script} --checkpoint {input.model} --montages {input.montages}"
        " --stats {input.stats} --cohort {params.cohort} --report {params.report}"
        " --device {params.device} --out-dir {output} > {log} 2>&1"


rule report_tables:
    input:
        metrics=report(
            "results/metrics.tsv",
            caption="../report/metrics_tsv.rst",
            category="Metrics",
        ),
        summary="results/summary.json",
        stats="results/stats.tsv",
        stats_summary="results/stats_summary.json",
    output:
        metrics_page=report(
            "results/report/metrics.html",
            caption="../report/metrics_page.rst",
            category="Metrics",
        ),
        stats_page=report(
            "results/report/stats.html",
            caption="../report/stats_page.rst",
            category="Cohort statistics",
        ),
        histograms=report(
            "results/report/volume_histograms.png",
            caption="../report/volume_histograms.rst",
            category="Cohort statistics",
        ),
    log:
        "logs/report_tables.log",
    benchmark:
        "logs/benchmarks/report_tables.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("report_tables"),
    params:
        script=script("report_tables.py"),
        classes=config["classes"],
    shell:
        "python {params.script} --metrics {input.metrics} --summary {input.summary}"
        " --stats {input.stats} --stats-summary {input.stats_summary}"
        " --classes {params.classes} --metrics-page {output.metrics_page}"
        " --stats-page {output.stats_page} --histograms {output.histograms} > {log} 2>&1"


# The probabilities' calibration on the validation split (preprocessed subjects, segmented as
# inference does, test-time augmentation included).
rule calibration:
    input:
        model="results/model/best.pt",
        val=[
            COHORT.stage_output("preprocess", shard)
            for shard, ids in STAGE_SHARDS["preprocess"].items()
            if any(BY_ID[s].split == "val" for s in ids)
        ],
    output:
        summary="results/calibration.json",
        figure=report(
            "results/report/calibration.png",
            caption="../report/calibration.rst",
            category="Calibration",
        ),
    log:
        "logs/calibration.log",
    benchmark:
        "logs/benchmarks/calibration.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    threads: rule_threads("infer")
    resources:
        **cluster_resources("infer"),
    params:
        script=script("calibration.py"),
        cohort=COHORT_JSON,
        inference=as_json(config["inference"]),
    shell:
        "python {params.script} --cohort {params.cohort} --checkpoint {input.model}"
        " --inference {params.inference} --summary {output.summary}"
        " --figure {output.figure} > {log} 2>&1"


# Dice and uncertainty of the current model on a few test subjects perturbed at graded
# strengths (checked by validation; a verdict changed later does not rerun it).
ROBUSTNESS_SUBJECTS = robustness_subjects(
    COHORT, config["report"]["robustness_subjects"]
)


rule robustness:
    input:
        model="results/model/best.pt",
        images=[ancient(p) for p in tracked(s.image for s in ROBUSTNESS_SUBJECTS)],
        labels=[ancient(p) for p in tracked(s.label for s in ROBUSTNESS_SUBJECTS)],
        validated=ancient(VALIDATION_OK),
        invalid=ancient(INVALID_TABLE),
    output:
        table="results/robustness.tsv",
        figure=report(
            "results/report/robustness.png",
            caption="../report/robustness.rst",
            category="Robustness",
        ),
    log:
        "logs/robustness.log",
    benchmark:
        "logs/benchmarks/robustness.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    threads: rule_threads("infer")
    resources:
        **cluster_resources("infer"),
    params:
        script=script("robustness.py"),
        cohort=COHORT_JSON,
        inference=as_json(config["inference"]),
        classes=config["classes"],
        subjects=config["report"]["robustness_subjects"],
        strengths=config["report"]["robustness_strengths"],
    shell:
        "python {params.script} --cohort {params.cohort} --invalid {input.invalid}"
        " --checkpoint {input.model} --inference {params.inference}"
        " --classes {params.classes} --subjects {params.subjects}"
        " --strengths {params.strengths} --table {output.table}"
        " --figure {output.figure} > {log} 2>&1"


# Last: its run-time table reads the benchmark files of every job before it.
rule run_config:
    """The run's configuration as the report shows it (sample sheet path redacted in
    pseudonymised runs), written here rather than passed on a command line that would grow
    with every configuration section."""
    output:
        "results/report/config.json",
    log:
        "logs/run_config.log",
    params:
        config=config,
    run:
        write_shown_config(output[0], params.config, log[0])


rule report_run:
    input:
        config=rules.run_config.output[0],
        curve=report(
            "results/model/learning_curve.png",
            caption="../report/learning_curve.rst",
            category="Training",
        ),
        plan="results/plan/plan.json",
        stats_summary="results/stats_summary.json",
        calibration=rules.calibration.output.summary,
        versions=rules.model_versions.output.table,
        robustness=rules.robustness.output.table,
        qc="results/qc/montages",
        explanations=rules.explanations.output,
        tables=rules.report_tables.output,
        meshes=MESHES,
    output:
        page=report(
            "results/report/run.html",
            caption="../report/run_page.rst",
            category="Run",
        ),
        runtimes="results/report/runtimes.tsv",
        runtimes_plot=report(
            "results/report/runtimes.png",
            caption="../report/runtimes.rst",
            category="Run",
        ),
    log:
        "logs/report_run.log",
    benchmark:
        "logs/benchmarks/report_run.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("report_run"),
    params:
        script=script("report_run.py"),
    shell:
        "python {params.script} --config {input.config} --plan {input.plan}"
        " --stats-summary {input.stats_summary} --calibration {input.calibration}"
        " --versions {input.versions}"
        " --benchmarks logs/benchmarks"
        " --page {output.page} --runtimes {output.runtimes}"
        " --runtimes-plot {output.runtimes_plot} > {log} 2>&1"
