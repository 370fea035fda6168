# DICOM inputs to NIfTI, in shards (the shards of every stage; only subjects with a DICOM image
# or label): one series per subject (selected by the sheet's `series` column or dicom.series),
# its slices checked and converted by cohortseg.dicom.series (highdicom), written under
# results/converted/. A subject whose series cannot become one regular volume is a validation
# problem of that subject (one line in results/qc/invalid_subjects.tsv), not a failed job.


rule convert:
    """A shard's DICOM (and PNG/TIFF) inputs converted to NIfTI under results/converted/, and
    the shard's conversion manifest (subject, files, SHA-256, problem)."""
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
    resources:
        **cluster_resources("convert"),
    params:
        members=members("convert"),
        sources=dicom_digest,
        cohort=COHORT_JSON,
        dicom=as_json(config["dicom"]),
        classes=config["classes"],
    shell:
        command(
            "convert.py",
            "--cohort {params.cohort} --shard {wildcards.shard} --dicom {params.dicom}"
            " --classes {params.classes} --manifest {output}",
        )


DICOM_SEGS = stage_outputs("dicom_seg") if config["outputs"]["dicom_seg"] else []


rule dicom_seg:
    """Each segmentation of a DICOM subject of an inference shard also as a DICOM Segmentation
    object referencing its source series (outputs.dicom_seg), named after the model in use
    (AlgorithmVersion), and the shard's DICOM SEG manifest."""
    input:
        segmented=inference_manifest("{shard}"),
        converted=paths.convert_manifest_path("{shard}"),
        model=INFERENCE_MODEL,
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
    resources:
        **cluster_resources("dicom_seg"),
    params:
        members=members("dicom_seg"),
        cohort=COHORT_JSON,
        dicom=as_json(config["dicom"]),
        classes=config["classes"],
    shell:
        command(
            "dicom_seg.py",
            "--cohort {params.cohort} --shard {wildcards.shard} --dicom {params.dicom}"
            " --classes {params.classes} --segmented {input.segmented} --model {input.model}"
            " --manifest {output}",
        )
