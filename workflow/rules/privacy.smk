# The subject → pseudonym mapping, written only where privacy.mapping_file says.
MAPPING_TARGETS = (
    [PRIVACY["mapping_file"]]
    if PRIVACY["pseudonymize"] and PRIVACY["mapping_file"]
    else []
)

if MAPPING_TARGETS:

    rule pseudonym_mapping:
        output:
            MAPPING_TARGETS[0],
        log:
            "logs/pseudonym_mapping.log",
        benchmark:
            "logs/benchmarks/pseudonym_mapping.tsv"
        conda:
            "../../envs/cohortseg.yaml"
        container:
            CONTAINER
        resources:
            **cluster_resources("pseudonym_mapping"),
        params:
            script=script("pseudonym_mapping.py"),
            cohort=COHORT_JSON,
        shell:
            "python {params.script} --cohort {params.cohort} --output {output} > {log} 2>&1"
