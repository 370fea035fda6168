# Whole-slide images (target `wsi`; README "Whole-slide images and 2D"): slides from
# wsi.slides (a sample sheet, or the synthetic demo slides), in shards of shard_size slides.
# tissue (per shard): pixel size, level, tissue mask, labels checked; patches (per shard of
# train slides): tissue-only HDF5 stores; wsi_train: the 2D network; wsi_infer (per shard):
# pyramidal label TIFFs, overviews, areas; wsi_report: statistics, bad slides, QC page. A bad
# slide is one line of its shard's table (then of results/wsi/qc/invalid_slides.tsv), and the
# others go on.


include: "wsi_common.smk"


rule wsi:
    input:
        wsicohort.STATS,
        wsicohort.INVALID_TABLE,
        wsicohort.REPORT,


rule wsi_demo_slide:
    output:
        image=f"{wsicohort.DEMO_DIR}/{{subject}}.tif",
        mask=f"{wsicohort.DEMO_DIR}/{{subject}}.mask.tif",
        geojson=f"{wsicohort.DEMO_DIR}/{{subject}}.geojson",
    log:
        "logs/wsi_demo_slide/{subject}.log",
    wildcard_constraints:
        subject=r"wsi-[0-9]+",
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("wsi_demo_slide"),
    params:
        script=script("wsi_demo.py"),
        wsi=WSI_JSON,
    shell:
        "python {params.script} --wsi {params.wsi} --subject {wildcards.subject} > {log} 2>&1"


rule wsi_tissue:
    input:
        wsi_inputs("tissue"),
    output:
        wsicohort.tissue_manifest_path("{shard}"),
    log:
        "logs/wsi_tissue/{shard}.log",
    benchmark:
        "logs/benchmarks/wsi_tissue/{shard}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("wsi_tissue"),
    params:
        script=script("wsi_tissue.py"),
        wsi=WSI_JSON,
        privacy=PRIVACY_JSON,
        shard_size=config["shard_size"],
        members=lambda w: WSI_SHARDS["tissue"][w.shard],
    shell:
        "python {params.script} --wsi {params.wsi} --privacy {params.privacy}"
        " --shard-size {params.shard_size}"
        " --shard {wildcards.shard} --table {output} > {log} 2>&1"


rule wsi_patches:
    input:
        tissue=wsicohort.tissue_manifest_path("{shard}"),
    output:
        wsicohort.patch_manifest_path("{shard}"),
    log:
        "logs/wsi_patches/{shard}.log",
    benchmark:
        "logs/benchmarks/wsi_patches/{shard}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("wsi_patches"),
    params:
        script=script("wsi_patches.py"),
        wsi=WSI_JSON,
        privacy=PRIVACY_JSON,
        patches=as_json(config["patches"]),
        shard_size=config["shard_size"],
        members=lambda w: WSI_SHARDS["patches"][w.shard],
    shell:
        "python {params.script} --wsi {params.wsi} --privacy {params.privacy}"
        " --patches {params.patches}"
        " --shard-size {params.shard_size} --shard {wildcards.shard}"
        " --tissue {input.tissue} --table {output} > {log} 2>&1"


rule wsi_train:
    input:
        patches=wsi_tables("patches"),
        tissue=wsi_tables("tissue"),
    output:
        wsicohort.MODEL,
    log:
        "logs/wsi_train.log",
    benchmark:
        "logs/benchmarks/wsi_train.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    threads: rule_threads("wsi_train")
    resources:
        **cluster_resources("wsi_train"),
    params:
        script=script("wsi_train.py"),
        launch=resources.train_launcher(WSI["training"], config["cluster"]),
        wsi=WSI_JSON,
        privacy=PRIVACY_JSON,
        out_dir=os.path.dirname(wsicohort.MODEL),
        checkpoint_dir=wsicohort.TRAIN_CHECKPOINT_DIR,
    shell:
        "{params.launch} python {params.script} --wsi {params.wsi} --privacy {params.privacy}"
        " --manifests {input.patches} --tissue {input.tissue} --out-dir {params.out_dir}"
        " --checkpoint-dir {params.checkpoint_dir} > {log} 2>&1"


rule wsi_infer:
    input:
        tissue=wsicohort.tissue_manifest_path("{shard}"),
        model=wsicohort.MODEL,
    output:
        wsicohort.inference_manifest_path("{shard}"),
    log:
        "logs/wsi_infer/{shard}.log",
    benchmark:
        "logs/benchmarks/wsi_infer/{shard}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    threads: rule_threads("wsi_infer")
    resources:
        **cluster_resources("wsi_infer"),
    params:
        script=script("wsi_infer.py"),
        wsi=WSI_JSON,
        privacy=PRIVACY_JSON,
        shard_size=config["shard_size"],
        members=lambda w: WSI_SHARDS["infer"][w.shard],
    shell:
        "python {params.script} --wsi {params.wsi} --privacy {params.privacy}"
        " --shard-size {params.shard_size}"
        " --shard {wildcards.shard} --tissue {input.tissue} --model {input.model}"
        " --table {output} > {log} 2>&1"


rule wsi_report:
    input:
        tissue=wsi_tables("tissue"),
        patches=wsi_tables("patches"),
        inference=wsi_tables("infer"),
    output:
        stats=wsicohort.STATS,
        invalid=wsicohort.INVALID_TABLE,
        report=wsicohort.REPORT,
    log:
        "logs/wsi_report.log",
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("wsi_report"),
    params:
        script=script("wsi_report.py"),
    shell:
        "python {params.script} --tables {input.tissue} {input.patches} {input.inference}"
        " --inference {input.inference} --stats {output.stats} --invalid {output.invalid}"
        " --report {output.report} > {log} 2>&1"
