# What users look at: per-subject statistics (per inference shard, then joined), QC montages,
# optional surface meshes (per shard) and the pages and figures that `snakemake --report
# results/report.html` gathers (outputs marked report(), captions in workflow/report/).
from cohortseg.io import read_json


report: "../report/workflow.rst"


SPLITS = config["inference"]["splits"]
SKIPPED = {
    "split not in inference.splits": sum(s.split not in SPLITS for s in SUBJECTS),
    "invalid (validation.on_invalid: skip)": sum(
        s.split in SPLITS and s.subject in EXCLUDED for s in SUBJECTS
    ),
}
MESHES = (
    [meshes_manifest(shard) for shard in SHARD_IDS]
    if config["meshes"]["enabled"]
    else []
)


# The shard's metrics stand for its segmentations (they are newer than all of them), so that
# each segmentation is requested by one rule only: planning 50,000 subjects stays fast.
rule stats:
    input:
        "results/metrics/{shard}.tsv",
    output:
        "results/stats/{shard}.tsv",
    log:
        "logs/stats/{shard}.log",
    benchmark:
        "logs/benchmarks/stats/{shard}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("stats"),
    params:
        script=script("stats.py"),
        subjects=lambda w: as_json(
            [
                {
                    "subject": s,
                    "split": BY_ID[s].split,
                    "segmentation": segmentation(s),
                    "image": BY_ID[s].image,
                }
                for s in SHARD_OF[w.shard]
            ]
        ),
        classes=config["classes"],
    shell:
        "python {params.script} --subjects {params.subjects} --classes {params.classes}"
        " --output {output} > {log} 2>&1"


rule stats_summary:
    input:
        expand("results/stats/{shard}.tsv", shard=SHARD_IDS),
    output:
        table=report(
            "results/stats.tsv",
            caption="../report/stats_table.rst",
            category="Cohort statistics",
        ),
        summary="results/stats_summary.json",
    log:
        "logs/stats_summary.log",
    benchmark:
        "logs/benchmarks/stats_summary.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("stats_summary"),
    params:
        script=script("stats_summary.py"),
        classes=config["classes"],
        outlier_z=config["report"]["outlier_z"],
        cohort_size=len(SUBJECTS),
        skipped=as_json(SKIPPED),
    shell:
        "python {params.script} --shards {input} --classes {params.classes}"
        " --outlier-z {params.outlier_z} --cohort-size {params.cohort_size}"
        " --skipped {params.skipped} --table {output.table} --summary {output.summary}"
        " > {log} 2>&1"


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
        cohort=as_json({k: config[k] for k in ("samples", "demo", "privacy")}),
    shell:
        "python {params.script} --stats {input.stats} --metrics {input.metrics}"
        " --classes {params.classes} --report {params.report} --cohort {params.cohort}"
        " --out-dir {output}"
        " > {log} 2>&1"


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


# Last: its run-time table reads the benchmark files of every job before it.
rule report_run:
    input:
        curve=report(
            "results/model/learning_curve.png",
            caption="../report/learning_curve.rst",
            category="Training",
        ),
        plan="results/plan/plan.json",
        stats_summary="results/stats_summary.json",
        qc="results/qc/montages",
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
        config=as_json(config),
    shell:
        "python {params.script} --config {params.config} --plan {input.plan}"
        " --stats-summary {input.stats_summary} --benchmarks logs/benchmarks"
        " --page {output.page} --runtimes {output.runtimes}"
        " --runtimes-plot {output.runtimes_plot} > {log} 2>&1"


# Surface meshes, one job per inference shard, all jobs of one rule (as for inference): the
# declared output is the shard's mesh manifest; a mesh deleted from a finished shard makes that
# shard run again (incomplete_meshes_marker).
rule meshes:
    input:
        segmentations=inference_manifest("{shard}"),  # stands for the shard's segmentations
        incomplete=incomplete_meshes_marker,
    output:
        meshes_manifest("{shard}"),
    log:
        "logs/meshes/{shard}.log",
    benchmark:
        "logs/benchmarks/meshes/{shard}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("meshes"),
    params:
        script=script("meshes.py"),
        subjects=lambda w: SHARD_OF[w.shard],
        segmentations=lambda w: [segmentation(s) for s in SHARD_OF[w.shard]],
        meshes=lambda w: [path for s in SHARD_OF[w.shard] for path in meshes_of(s)],
        classes=config["classes"],
        smoothing=config["meshes"]["smoothing_iterations"],
    shell:
        "python {params.script} --subjects {params.subjects}"
        " --segmentations {params.segmentations} --classes {params.classes}"
        " --outputs {params.meshes} --manifest {output}"
        " --smoothing-iterations {params.smoothing} > {log} 2>&1"
