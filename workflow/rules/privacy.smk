# The subject → pseudonym mapping, written only where privacy.mapping_file says.
MAPPING_TARGETS = (
    [PRIVACY["mapping_file"]]
    if PRIVACY["pseudonymize"] and PRIVACY["mapping_file"]
    else []
)

if MAPPING_TARGETS:

    rule pseudonym_mapping:
        """The subject → pseudonym table (privacy.mapping_file; keep it away from results/)."""
        output:
            MAPPING_TARGETS[0],
        log:
            "logs/pseudonym_mapping.log",
        benchmark:
            "logs/benchmarks/pseudonym_mapping.tsv"
        conda:
            "../../envs/cohortseg.yaml"
        resources:
            **cluster_resources("pseudonym_mapping"),
        params:
            cohort=COHORT_JSON,
        shell:
            command(
                "pseudonym_mapping.py", "--cohort {params.cohort} --output {output}"
            )
