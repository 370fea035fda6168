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
RTSTRUCTS = stage_outputs("rtstruct") if config["outputs"]["rtstruct"] else []


from cohortseg.dicom.identity import check_seg_identity

# dicom.seg_identity: source would name the source's patient in results/ of a pseudonymised
# run: a configuration error at start-up, not a failed job
try:
    check_seg_identity(config["dicom"]["seg_identity"], PRIVACY["pseudonymize"])
except CohortsegError as exc:
    raise WorkflowError(f"cohortseg: {exc}") from None


rule dicom_seg:
    """Each segmentation of a DICOM subject of an inference shard also as a DICOM Segmentation
    object referencing its source series (outputs.dicom_seg), named after the model in use
    (AlgorithmVersion), and the shard's DICOM SEG manifest."""
    input:
        segmented=inference_manifest("{shard}"),
        converted=paths.convert_manifest_path("{shard}"),
        model=INFERENCE_MODEL,
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


rule rtstruct:
    """Each segmentation of a DICOM subject of an inference shard also as an RT Structure Set
    (one ROI per class, contours per slice) referencing its source series (outputs.rtstruct),
    made with the model in use, and the shard's RTSTRUCT manifest."""
    input:
        segmented=inference_manifest("{shard}"),
        converted=paths.convert_manifest_path("{shard}"),
        model=INFERENCE_MODEL,
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
    resources:
        **cluster_resources("rtstruct"),
    params:
        members=members("rtstruct"),
        cohort=COHORT_JSON,
        dicom=as_json(config["dicom"]),
        classes=config["classes"],
    shell:
        command(
            "rtstruct.py",
            "--cohort {params.cohort} --shard {wildcards.shard} --dicom {params.dicom}"
            " --classes {params.classes} --segmented {input.segmented} --model {input.model}"
            " --manifest {output}",
        )
