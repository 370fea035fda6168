# Whole-slide images (target `wsi`; README "Whole-slide images and 2D"): slides from
# wsi.slides (a sample sheet, or the synthetic demo slides), in shards of shard_size slides.
# tissue (per shard): pixel size, level, tissue mask, labels checked; patches (per shard of
# train slides): tissue-only HDF5 stores; wsi_train: the 2D network; wsi_infer (per shard):
# pyramidal label TIFFs, overviews, areas; wsi_report: statistics, bad slides, QC page. A bad
# slide is one line of its shard's table (then of results/wsi/qc/invalid_slides.tsv), and the
# others go on.


include: "wsi_common.smk"


rule wsi:
    """Target: the whole-slide pipeline (statistics, bad slides, QC page)."""
    input:
        wsicohort.STATS,
        wsicohort.INVALID_TABLE,
        wsicohort.REPORT,


rule wsi_demo_slide:
    """One synthetic demo slide: a pyramidal TIFF, its label mask and its GeoJSON."""
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
    resources:
        **cluster_resources("wsi_demo_slide"),
    params:
        wsi=WSI_JSON,
    shell:
        command("wsi_demo.py", "--wsi {params.wsi} --subject {wildcards.subject}")


rule wsi_tissue:
    """A shard's slides checked (pixel size, level) with their tissue masks and labels."""
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
    resources:
        **cluster_resources("wsi_tissue"),
    params:
        wsi=WSI_JSON,
        privacy=PRIVACY_JSON,
        shard_size=config["shard_size"],
        members=wsi_members("tissue"),
    shell:
        command(
            "wsi_tissue.py",
            "--wsi {params.wsi} --privacy {params.privacy} --shard-size {params.shard_size}"
            " --shard {wildcards.shard} --table {output}",
        )


rule wsi_patches:
    """Tissue-only patch stores of a shard's training slides."""
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
    resources:
        **cluster_resources("wsi_patches"),
    params:
        wsi=WSI_JSON,
        privacy=PRIVACY_JSON,
        patches=as_json(config["patches"]),
        shard_size=config["shard_size"],
        members=wsi_members("patches"),
    shell:
        command(
            "wsi_patches.py",
            "--wsi {params.wsi} --privacy {params.privacy} --patches {params.patches}"
            " --shard-size {params.shard_size} --shard {wildcards.shard}"
            " --tissue {input.tissue} --table {output}",
        )


rule wsi_train:
    """The 2D network trained on the training slides' patch stores."""
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
    threads: rule_threads("wsi_train")
    resources:
        **cluster_resources("wsi_train"),
    params:
        launch=resources.train_launcher(WSI["training"], config["cluster"]),
        wsi=WSI_JSON,
        privacy=PRIVACY_JSON,
        out_dir=output_folder,
        checkpoint_dir=wsicohort.TRAIN_CHECKPOINT_DIR,
    shell:
        command(
            "wsi_train.py",
            "--wsi {params.wsi} --privacy {params.privacy} --manifests {input.patches}"
            " --tissue {input.tissue} --out-dir {params.out_dir}"
            " --checkpoint-dir {params.checkpoint_dir}",
            prefix="{params.launch} ",
        )


rule wsi_infer:
    """A shard's slides segmented tile by tile: pyramidal label TIFFs, overviews, areas."""
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
    threads: rule_threads("wsi_infer")
    resources:
        **cluster_resources("wsi_infer"),
    params:
        wsi=WSI_JSON,
        privacy=PRIVACY_JSON,
        shard_size=config["shard_size"],
        members=wsi_members("infer"),
    shell:
        command(
            "wsi_infer.py",
            "--wsi {params.wsi} --privacy {params.privacy} --shard-size {params.shard_size}"
            " --shard {wildcards.shard} --tissue {input.tissue} --model {input.model}"
            " --table {output}",
        )


rule wsi_report:
    """The slides' statistics, the bad slides' table and the QC page."""
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
    resources:
        **cluster_resources("wsi_report"),
    shell:
        command(
            "wsi_report.py",
            "--tables {input.tissue} {input.patches} {input.inference}"
            " --inference {input.inference} --stats {output.stats} --invalid {output.invalid}"
            " --report {output.report}",
        )
