# The demo cohort: synthetic phantoms, one job per subject (used only when samples == "demo").


rule demo_subject:
    output:
        image="resources/demo/images/{subject}.nii.gz",
        label="resources/demo/labels/{subject}.nii.gz",
    params:
        demo=as_json(config["demo"]),
    log:
        "logs/demo_subject/{subject}.log",
    benchmark:
        "logs/benchmarks/demo_subject/{subject}.tsv"
    shell:
        "python scripts/make_demo.py --subject {wildcards.subject} --image {output.image}"
        " --label {output.label} --demo {params.demo} > {log} 2>&1"
