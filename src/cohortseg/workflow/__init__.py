"""Layer 8: the workflow's logic as pure functions of the config and the environment: config
typing, the cohort as jobs see it, every results/ path, cluster resources, rerun markers,
presets, the model registry, and what every command-line entry point shares."""
