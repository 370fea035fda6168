# Rerun markers: a finished shard job whose per-subject files are not declared outputs (its
# manifest is) runs again when one of them was deleted or a patch store is damaged. While the
# DAG is built, cohortseg.workflow.markers.rerun_marker only reads (the manifest, a stat per
# file) and names a marker that is not there yet; this job writes it, so a dry run shows the
# marker and the shard's job and writes nothing. The marker then stays an input of the shard's
# job (older than its new output), so the set of inputs does not change again.


rule rerun_marker:
    """A marker that makes a finished shard run again: it lists the shard's files that were
    deleted or damaged (results/<stage>/.incomplete/<shard>.<digest>)."""
    output:
        "{folder}/.incomplete/{shard}.{digest}",
    log:
        "logs/rerun_marker/{folder}/{shard}.{digest}.log",
    wildcard_constraints:
        folder=r"results/.+",
        digest=r"[0-9a-f]{16}",
    params:
        reason=marker_reason,
    run:
        markers.write_marker(output[0], params.reason, log[0])
