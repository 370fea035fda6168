# The demo cohort: synthetic phantoms, one job per subject (used only when samples == "demo").
# With demo.format: dicom each image is a folder holding an MR series (labels stay NIfTI).


rule demo_subject:
    """One synthetic demo subject: an image (NIfTI, or a DICOM series folder) and its label."""
    output:
        image=(
            directory("resources/demo/dicom/{subject}")
            if config["demo"]["format"] == "dicom"
            else "resources/demo/images/{subject}.nii.gz"
        ),
        label="resources/demo/labels/{subject}.nii.gz",
    log:
        "logs/demo_subject/{subject}.log",
    benchmark:
        "logs/benchmarks/demo_subject/{subject}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    resources:
        **cluster_resources("demo_subject"),
    params:
        demo=as_json(config["demo"]),
    shell:
        command(
            "make_demo.py",
            "--subject {wildcards.subject} --image {output.image} --label {output.label}"
            " --demo {params.demo}",
        )
