"""A federation's processes as SLURM jobs on a real cluster: the coordinator's SuperLink and a
site's SuperNode submitted with profiles/slurm/federation/*.sbatch, over TLS with SuperNode
authentication, training a round of the Flower App.

Needs a running cluster (tests/cluster/slurm-up.sh, which .ci/run starts); skipped without one
unless COHORTSEG_REQUIRE_SLURM=1 (as in CI), where it fails.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cohortseg.federated.credentials import write_node_keys, write_tls_certificates
from cohortseg.federated.deployment import (
    LOOPBACK,
    free_port,
    node_config,
    register_supernode,
    run_app,
    write_connection,
)
from tests.cluster.test_slurm_workflow import cluster_is_up
from tests.training.test_loop import CONFIG, make_inputs
from tests.workflow.conftest import REPO

pytestmark = pytest.mark.slow

JOBS = REPO / "profiles" / "slurm" / "federation"


def sbatch(script: Path, workdir: Path, **variables: str) -> str:
    """Submit ``script`` with ``variables`` exported (and this interpreter's PATH) from
    ``workdir``; returns the job id."""
    env = {**os.environ, **variables}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    out = subprocess.run(
        ["sbatch", "--parsable", "--export=ALL", f"--chdir={workdir}", str(script)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    return out.strip().split(";")[0]


def wait_until_listening(port: int, job: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True
        ).stdout.strip()
        assert state in ("PENDING", "RUNNING", "CONFIGURING"), f"job {job}: {state}"
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the SuperLink job {job} did not listen on {port}")


def test_superlink_and_supernode_run_as_slurm_jobs_and_train_a_round(
    tmp_path, phantom_files, small_plan
):
    if not cluster_is_up():
        if os.environ.get("COHORTSEG_REQUIRE_SLURM") == "1":
            pytest.fail("no SLURM cluster answers (run tests/cluster/slurm-up.sh)")
        pytest.skip("no SLURM cluster (tests/cluster/slurm-up.sh starts one)")
    coordinator, site = tmp_path / "coordinator", tmp_path / "site-north"
    stores, _ = make_inputs(site / "stores", phantom_files, small_plan)
    for folder, name in ((coordinator, "config.json"), (site, "config.json")):
        folder.mkdir(exist_ok=True)
        (folder / name).write_text(json.dumps(CONFIG))
        (folder / "plan.json").write_text(json.dumps(small_plan))
    (site / "stores.txt").write_text("\n".join(stores) + "\n")
    certs = write_tls_certificates(coordinator / "certs", ["localhost", LOOPBACK])
    keys = write_node_keys(site / "keys", "north")
    jobs = []
    try:
        port = free_port()
        jobs.append(
            sbatch(
                JOBS / "superlink.sbatch",
                coordinator,
                CERTS=str(coordinator / "certs"),
                HOST=LOOPBACK,
                PORT=str(port),
            )
        )
        wait_until_listening(port, jobs[0])
        home = coordinator / "flwr"
        write_connection(home, f"{LOOPBACK}:{port}", str(certs["ca"]))
        register_supernode(home, keys["public"])
        values = {
            "site": "north",
            "stores": str(site / "stores.txt"),
            "config": str(site / "config.json"),
            "plan": str(site / "plan.json"),
        }
        jobs.append(
            sbatch(
                JOBS / "supernode.sbatch",
                site,
                SUPERLINK=f"{LOOPBACK}:{port}",
                CA=str(certs["ca"]),
                KEY=str(keys["private"]),
                NODE_CONFIG=node_config(values),
                CLIENTAPPIO_PORT=str(free_port()),
            )
        )
        run_config = {
            "config": str(coordinator / "config.json"),
            "plan": str(coordinator / "plan.json"),
            "out-dir": str(coordinator / "model"),
            "rounds": 1,
            "local-steps": 2,
            "proximal-mu": 0.0,
            "min-sites": 1,
            "sites": "north",
        }
        federation = {"address": f"{LOOPBACK}:{port}", "flwr_home": str(home), "ca": certs["ca"]}
        run_app(federation, run_config, tmp_path / "flwr-run.log", timeout_s=600)
        assert json.loads((coordinator / "model" / "rounds.json").read_text())["last_round"] == 1
        states = subprocess.run(
            ["squeue", "-h", "-j", ",".join(jobs), "-o", "%i %T"],
            capture_output=True,
            text=True,
        ).stdout
        assert re.findall(r"RUNNING", states) == ["RUNNING", "RUNNING"], states
        # the round's ClientApp ran inside the site's job: its log is in the site's folder
        log = (site / f"slurm-{jobs[1]}.out").read_text()
        assert "SuperNode ID" in log, log[-2000:]
    finally:
        if jobs:  # cancelled and gone before the next cluster test starts
            subprocess.run(["scancel", *jobs], check=False)
            deadline = time.monotonic() + 120
            while (
                time.monotonic() < deadline
                and subprocess.run(
                    ["squeue", "-h", "-j", ",".join(jobs), "-t", "PD,R,CG,CF"],
                    capture_output=True,
                    text=True,
                ).stdout.strip()
            ):
                time.sleep(1)
