# DICOM inputs to NIfTI, in shards (the shards of every stage; only subjects with a DICOM image
# or label): one series per subject (selected by the sheet's `series` column or dicom.series),
# its slices checked and converted by cohortseg.dicom.series (highdicom), written under
# results/converted/. A subject whose series cannot become one regular volume is a validation
# problem of that subject (one line in results/qc/invalid_subjects.tsv), not a failed job.


rule convert:
    input:
        sources=dicom_sources,
        incomplete=incomplete_marker("convert", "image", "label"),
    output:
        paths.convert_manifest_path("{shard}"),
    log:
        "logs/convert/{shard}.log",
    benchmark:
        "logs/benchmarks/convert/{shard}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("convert"),
    params:
        script=script("convert.py"),
        members=members("convert"),
        cohort=COHORT_JSON,
        dicom=as_json(config["dicom"]),
        classes=config["classes"],
    shell:
        "python {params.script} --cohort {params.cohort} --shard {wildcards.shard}"
        " --dicom {params.dicom} --classes {params.classes} --manifest {output} > {log} 2>&1"


DICOM_SEGS = stage_outputs("dicom_seg") if config["outputs"]["dicom_seg"] else []
RTSTRUCTS = stage_outputs("rtstruct") if config["outputs"]["rtstruct"] else []


from cohortseg.dicom.identity import check_seg_identity

# dicom.seg_identity: source would name the source's patient in results/ of a pseudonymised
# run: a configuration error at start-up, not a failed job
try:
    check_seg_identity(config["dicom"]["seg_identity"], PRIVACY["pseudonymize"])
except CohortsegError as exc:
    raise WorkflowError(f"cohortseg: {exc}") from None


# Each segmentation of a DICOM subject also as a DICOM Segmentation object that references its
# source series (outputs.dicom_seg), in the inference shards.
rule dicom_seg:
    input:
        segmented=inference_manifest("{shard}"),
        converted=paths.convert_manifest_path("{shard}"),
        model="results/model/best.pt",
        sources=dicom_sources,
        incomplete=incomplete_marker("dicom_seg", "dicom_seg", "source"),
    output:
        paths.dicom_seg_manifest_path("{shard}"),
    log:
        "logs/dicom_seg/{shard}.log",
    benchmark:
        "logs/benchmarks/dicom_seg/{shard}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("dicom_seg"),
    params:
        script=script("dicom_seg.py"),
        members=members("dicom_seg"),
        cohort=COHORT_JSON,
        dicom=as_json(config["dicom"]),
        classes=config["classes"],
    shell:
        "python {params.script} --cohort {params.cohort} --shard {wildcards.shard}"
        " --dicom {params.dicom} --classes {params.classes} --segmented {input.segmented}"
        " --model {input.model} --manifest {output} > {log} 2>&1"


# Each segmentation of a DICOM subject also as an RT Structure Set (one ROI per class, contours
# per slice) that references its source series (outputs.rtstruct), in the inference shards.
rule rtstruct:
    input:
        segmented=inference_manifest("{shard}"),
        converted=paths.convert_manifest_path("{shard}"),
        model="results/model/best.pt",
        sources=dicom_sources,
        incomplete=incomplete_marker("rtstruct", "rtstruct", "source"),
    output:
        paths.rtstruct_manifest_path("{shard}"),
    log:
        "logs/rtstruct/{shard}.log",
    benchmark:
        "logs/benchmarks/rtstruct/{shard}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("rtstruct"),
    params:
        script=script("rtstruct.py"),
        members=members("rtstruct"),
        cohort=COHORT_JSON,
        dicom=as_json(config["dicom"]),
        classes=config["classes"],
    shell:
        "python {params.script} --cohort {params.cohort} --shard {wildcards.shard}"
        " --dicom {params.dicom} --classes {params.classes} --segmented {input.segmented}"
        " --model {input.model} --manifest {output} > {log} 2>&1"
