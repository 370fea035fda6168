# Per labelled subject: preprocessing onto the plan's grid, then patches into an HDF5 store.


rule preprocess:
    input:
        image=image_of,
        label=label_of,
        plan="results/plan/plan.json",
    output:
        image="results/preprocessed/{subject}/image.nii",
        label="results/preprocessed/{subject}/label.nii.gz",
        geometry="results/preprocessed/{subject}/geometry.json",
    log:
        "logs/preprocess/{subject}.log",
    benchmark:
        "logs/benchmarks/preprocess/{subject}.tsv"
    shell:
        "python scripts/preprocess.py --subject {wildcards.subject} --image {input.image}"
        " --label {input.label} --plan {input.plan} --out-image {output.image}"
        " --out-label {output.label} --out-geometry {output.geometry} > {log} 2>&1"


rule patches:
    input:
        image="results/preprocessed/{subject}/image.nii",
        label="results/preprocessed/{subject}/label.nii.gz",
        plan="results/plan/plan.json",
    output:
        "results/patches/{subject}.h5",
    params:
        patches=as_json(config["patches"]),
    log:
        "logs/patches/{subject}.log",
    benchmark:
        "logs/benchmarks/patches/{subject}.tsv"
    shell:
        "python scripts/patches.py --subject {wildcards.subject} --image {input.image}"
        " --label {input.label} --plan {input.plan} --patches {params.patches}"
        " --output {output} > {log} 2>&1"
