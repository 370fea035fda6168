"""SLURM resources of each rule, its threads, and the launcher that starts the training ranks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cohortseg.core.errors import CohortsegError


def rule_spec(cluster: Mapping, rule: str) -> dict[str, Any]:
    """``cluster.rules.default`` overlaid with ``cluster.rules[rule]``."""
    return {**cluster["rules"]["default"], **cluster["rules"].get(rule, {})}


def rule_threads(cluster: Mapping, rule: str) -> int:
    """Threads of a rule: its ``cpus_per_task`` (locally capped at ``--cores`` by Snakemake)."""
    return int(rule_spec(cluster, rule)["cpus_per_task"])


def train_tasks(cluster: Mapping) -> int:
    """Ranks of the training job on a cluster: one per GPU, else ``cluster.rules.train.tasks``."""
    spec = rule_spec(cluster, "train")
    return int(spec.get("gpus", 0)) or int(spec.get("tasks", 1))


def cluster_resources(
    cluster: Mapping, training: Mapping, rule: str, environ: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """SLURM resources of ``rule`` in the executor plugin's names (``slurm_partition``,
    ``slurm_account``, ``gpu``, ``gpu_model``, ``tasks_per_gpu``, ``mem_mb``, ``runtime``,
    ``cpus_per_task``, ``tasks``, ``mpi``).

    GPU rules go to the GPU partition with one task per GPU; an unset partition or account
    falls back to ``$COHORTSEG_(GPU_)PARTITION`` and ``$COHORTSEG_ACCOUNT``, else to the
    cluster's defaults. A multi-rank ``train`` under ``launcher: srun`` gets ``mpi: srun`` so
    that the job step does not wrap the rule's own ``srun`` in another one.
    """
    spec = rule_spec(cluster, rule)
    gpus = int(spec.pop("gpus", 0))
    partition = cluster["partition"] or environ.get("COHORTSEG_PARTITION")
    if gpus:
        partition = cluster["gpu_partition"] or environ.get("COHORTSEG_GPU_PARTITION") or partition
        spec.update(gpu=gpus, tasks_per_gpu=1)
        spec.pop("tasks", None)
        if cluster["gpu_model"]:
            spec["gpu_model"] = cluster["gpu_model"]
    if rule == "train" and training["launcher"] == "srun" and train_tasks(cluster) > 1:
        spec.update(mpi="srun", tasks=train_tasks(cluster))
    account = cluster["account"] or environ.get("COHORTSEG_ACCOUNT")
    if partition:
        spec["slurm_partition"] = partition
    if account:
        spec["slurm_account"] = account
    return spec


def train_launcher(training: Mapping, cluster: Mapping) -> str:
    """The command prefix that starts the training ranks (``training.launcher``): empty for
    one process, ``torchrun``/``horovodrun`` with ``training.ranks`` local processes, or
    ``srun --ntasks N`` for the N tasks of a SLURM allocation (the job step hides the
    allocation's task count from nested steps, so it is said)."""
    ranks = int(training["ranks"])
    launcher = training["launcher"]
    if training["backend"] == "federated" and launcher != "none":
        raise CohortsegError(
            "training.backend: federated starts its own Flower processes: use launcher: none"
        )
    if launcher == "torchrun":
        return f"torchrun --standalone --nproc-per-node {ranks}"
    if launcher == "horovodrun":
        return f"horovodrun --gloo -np {ranks} -H localhost:{ranks}"
    if launcher == "srun":
        tasks = train_tasks(cluster)
        if tasks < 2:
            return ""  # one task: the job step itself is the only rank
        if training["backend"] == "horovod":
            raise CohortsegError(
                "training.launcher: srun needs training.backend: ddp (Horovod without MPI"
                " cannot rendezvous under srun; use launcher: horovodrun on one node)"
            )
        return f"srun --ntasks {tasks}"
    return ""
