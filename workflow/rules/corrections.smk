# Corrected labels from review (corrections.dir, where the review datastore's labels/final/ also
# leads: MONAI Label's submitted labels), one job per corrected subject: checked against the
# image (grid, classes; Slicer segments mapped to classes by name) and written as the subject's
# NIfTI label map. The cohort already names that file as the subject's label, so validation, the
# plan, preprocessing, patches, training and evaluation take it like any other label. The
# reviewers' files themselves stay where they are, outside results/: `make clean` and reruns
# never touch them.


rule correct_label:
    """A reviewer's correction of one subject, checked against its image and written as the
    subject's NIfTI label map (results/corrections/)."""
    input:
        correction=correction_of,
        image=tracked_image_of,
    output:
        corrected_label_path("{subject}"),
    log:
        "logs/correct_label/{subject}.log",
    benchmark:
        "logs/benchmarks/correct_label/{subject}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("correct_label"),
    params:
        classes=config["classes"],
        tolerance=config["validation"]["affine_tolerance_mm"],
        image=image_of,
    shell:
        command(
            "correct_label.py",
            "--subject {wildcards.subject} --correction {input.correction}"
            " --image {params.image} --classes {params.classes}"
            " --affine-tolerance-mm {params.tolerance} --output {output}",
        )
