# Corrected labels from review (corrections.dir, and MONAI Label's labels/final/ in the review
# datastore), one job per corrected subject: checked against the image (grid, classes; Slicer
# segments mapped to classes by name) and written as the subject's NIfTI label map. The cohort
# already names that file as the subject's label, so validation, the plan, preprocessing,
# patches, training and evaluation take it like any other label.


rule correct_label:
    input:
        correction=lambda w: CORRECTIONS[w.subject],
        image=lambda w: tracked([BY_ID[w.subject].image]),
    output:
        corrected_label_path("{subject}"),
    log:
        "logs/correct_label/{subject}.log",
    benchmark:
        "logs/benchmarks/correct_label/{subject}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("correct_label"),
    params:
        script=script("correct_label.py"),
        classes=config["classes"],
        tolerance=config["validation"]["affine_tolerance_mm"],
        image=lambda w: BY_ID[w.subject].image,
    shell:
        "python {params.script} --subject {wildcards.subject} --correction {input.correction}"
        " --image {params.image} --classes {params.classes}"
        " --affine-tolerance-mm {params.tolerance} --output {output} > {log} 2>&1"
