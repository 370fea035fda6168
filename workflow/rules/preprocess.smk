# Per labelled subject: preprocessing onto the plan's grid, then patches into an HDF5 store.


rule preprocess:
    input:
        image=lambda w: tracked([BY_ID[w.subject].image]),
        label=lambda w: tracked([BY_ID[w.subject].label]),
        plan="results/plan/plan.json",
    output:
        image="results/preprocessed/{subject}/image.nii",
        label="results/preprocessed/{subject}/label.nii.gz",
        geometry="results/preprocessed/{subject}/geometry.json",
    log:
        "logs/preprocess/{subject}.log",
    benchmark:
        "logs/benchmarks/preprocess/{subject}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("preprocess"),
    params:
        script=script("preprocess.py"),
        image=lambda w: BY_ID[w.subject].image,
        label=lambda w: BY_ID[w.subject].label,
    shell:
        "python {params.script} --subject {wildcards.subject} --image {params.image}"
        " --label {params.label} --plan {input.plan} --out-image {output.image}"
        " --out-label {output.label} --out-geometry {output.geometry} > {log} 2>&1"


rule patches:
    input:
        image="results/preprocessed/{subject}/image.nii",
        label="results/preprocessed/{subject}/label.nii.gz",
        plan="results/plan/plan.json",
        damaged=damaged_store_marker,
    output:
        "results/patches/{subject}.h5",
    log:
        "logs/patches/{subject}.log",
    benchmark:
        "logs/benchmarks/patches/{subject}.tsv"
    conda:
        "../../envs/cohortseg.yaml"
    container:
        CONTAINER
    resources:
        **cluster_resources("patches"),
    params:
        script=script("patches.py"),
        patches=as_json(config["patches"]),
    shell:
        "python {params.script} --subject {wildcards.subject} --image {input.image}"
        " --label {input.label} --plan {input.plan} --patches {params.patches}"
        " --output {output} > {log} 2>&1"
