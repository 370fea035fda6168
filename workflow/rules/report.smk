# What users look at: QC montages and the pages and figures that `snakemake --report
# results/report.html` gathers (outputs marked report(), captions in workflow/report/).
from cohortseg.workflow.config import write_shown_config


report: "../report/workflow.rst"


rule qc_montages:
    """QC montages of a few subjects (a random draw, the lowest Dice, the most unusual
    volumes): image and segmentation over a few slices each."""
    input:
        stats="results/stats.tsv",
        metrics="results/metrics.tsv",
    output:
        report(
            directory("results/qc/montages"),
            patterns=["{subject}.png"],
            caption="../report/qc_montage.rst",
            category="QC montages",
            labels=montage_labels,
        ),
    log:
        "logs/qc_montages.log",
    benchmark:
        "logs/benchmarks/qc_montages.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("qc_montages"),
    params:
        classes=config["classes"],
        report=as_json(config["report"]),
        cohort=COHORT_JSON,
    shell:
        command(
            "qc_montages.py",
            "--stats {input.stats} --metrics {input.metrics} --classes {params.classes}"
            " --report {params.report} --cohort {params.cohort} --out-dir {output}",
        )


rule explanations:
    """Grad-CAM of one class over the montage slices of the same subjects, made with the model
    in use (its SHA-256 in model.json beside them)."""
    input:
        model=INFERENCE_MODEL,
        montages="results/qc/montages",
        stats="results/stats.tsv",
    output:
        report(
            directory("results/qc/explanations"),
            patterns=["{subject}.png"],
            caption="../report/explanation.rst",
            category="Explanations",
            labels=montage_labels,
        ),
    log:
        "logs/explanations.log",
    benchmark:
        "logs/benchmarks/explanations.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    threads: rule_threads("infer")
    resources:
        **cluster_resources("infer"),
    params:
        report=as_json(config["report"]),
        cohort=COHORT_JSON,
        device=config["inference"]["device"],
    shell:
        command(
            "explanations.py",
            "--checkpoint {input.model} --montages {input.montages} --stats {input.stats}"
            " --cohort {params.cohort} --report {params.report} --device {params.device}"
            " --out-dir {output}",
        )


rule report_tables:
    """The report's metrics and statistics pages and the volume histograms."""
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
    resources:
        **cluster_resources("report_tables"),
    params:
        classes=config["classes"],
    shell:
        command(
            "report_tables.py",
            "--metrics {input.metrics} --summary {input.summary} --stats {input.stats}"
            " --stats-summary {input.stats_summary} --classes {params.classes}"
            " --metrics-page {output.metrics_page} --stats-page {output.stats_page}"
            " --histograms {output.histograms}",
        )


rule calibration:
    """The calibration of the model in use on the validation split (preprocessed subjects,
    segmented as inference does, test-time augmentation included): reliability diagram and
    expected calibration error, with the model's SHA-256."""
    input:
        model=INFERENCE_MODEL,
        val=val_manifests(),
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
    threads: rule_threads("infer")
    resources:
        **cluster_resources("infer"),
    params:
        cohort=COHORT_JSON,
        inference=as_json(config["inference"]),
    shell:
        command(
            "calibration.py",
            "--cohort {params.cohort} --checkpoint {input.model}"
            " --inference {params.inference} --summary {output.summary}"
            " --figure {output.figure}",
        )


# Dice and uncertainty of the model in use on a few test subjects perturbed at graded
# strengths (checked by validation; a verdict changed later does not rerun it).
ROBUSTNESS_SUBJECTS = robustness_subjects(
    COHORT, config["report"]["robustness_subjects"]
)


rule robustness:
    """Dice and uncertainty of the model in use on a few labelled test subjects perturbed at
    graded strengths (noise, bias field, intensity, gamma, resolution, rotation), with the
    model's SHA-256."""
    input:
        model=INFERENCE_MODEL,
        images=[ancient(p) for p in made_by_rules(s.image for s in ROBUSTNESS_SUBJECTS)],
        labels=[ancient(p) for p in made_by_rules(s.label for s in ROBUSTNESS_SUBJECTS)],
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
    threads: rule_threads("infer")
    resources:
        **cluster_resources("infer"),
    params:
        cohort=COHORT_JSON,
        inference=as_json(config["inference"]),
        classes=config["classes"],
        subjects=config["report"]["robustness_subjects"],
        strengths=config["report"]["robustness_strengths"],
    shell:
        command(
            "robustness.py",
            "--cohort {params.cohort} --invalid {input.invalid} --checkpoint {input.model}"
            " --inference {params.inference} --classes {params.classes}"
            " --subjects {params.subjects} --strengths {params.strengths}"
            " --table {output.table} --figure {output.figure}",
        )


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
    """The run at a glance: progress, subjects to review, the model in use (version,
    SHA-256), calibration, model versions, run time per rule, the plan and the configuration.
    """
    input:
        config=rules.run_config.output[0],
        model=INFERENCE_MODEL,
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
    resources:
        **cluster_resources("report_run"),
    params:
        benchmarks="logs/benchmarks",
    shell:
        command(
            "report_run.py",
            "--config {input.config} --model {input.model} --plan {input.plan}"
            " --stats-summary {input.stats_summary} --calibration {input.calibration}"
            " --versions {input.versions} --benchmarks {params.benchmarks}"
            " --page {output.page} --runtimes {output.runtimes}"
            " --runtimes-plot {output.runtimes_plot}",
        )
