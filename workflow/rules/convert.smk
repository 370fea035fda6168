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


# Each segmentation of a DICOM subject also as a DICOM Segmentation object that references its
# source series (outputs.dicom_seg), in the inference shards.
rule dicom_seg:
    input:
        segmented=inference_manifest("{shard}"),
        converted=paths.convert_manifest_path("{shard}"),
        model="results/model/best.pt",
        sources=dicom_sources,
        incomplete=incomplete_marker("dicom_seg", "dicom_seg"),
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
