"""A site's SuperNode inputs and the script its admin starts the SuperNode with."""

from __future__ import annotations

import inspect
import json
import os
import shlex
import subprocess
import time

import pytest

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import read_json, read_tsv, write_json
from cohortseg.federated.deployment import (
    local_federation,
    run_app,
    run_timeout_s,
    supernode_script,
    threads_per_site,
    write_site_supernode,
)
from cohortseg.workflow.cohort import WorkflowCohort
from cohortseg.workflow.config import load_schema
from tests.conftest import REPO, default_config, make_small_plan
from tests.training.test_loop import CONFIG


def test_supernode_script_starts_flower_with_only_the_sites_files(tmp_path):
    values = {"stores": "/data/fed dir/stores.txt", "val": "/data/val.tsv"}
    script = tmp_path / "supernode.sh"
    script.write_text(supernode_script("north", values))
    # stand-in flower-supernode that prints its arguments, one a line
    (tmp_path / "flower-supernode").write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    os.chmod(tmp_path / "flower-supernode", 0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "SUPERLINK": "coord:9092", "CA": "ca.crt"}
    env |= {"KEY": "keys/north.key"}
    out = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "--superlink",
        "coord:9092",
        "--root-certificates",
        "ca.crt",
        "--auth-supernode-private-key",
        "keys/north.key",
        "--node-config",
        'site="north" stores="/data/fed dir/stores.txt" val="/data/val.tsv"',
    ]
    # without the site's key it says what is missing
    del env["KEY"]
    proc = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "private key" in proc.stderr
    assert shlex.split(supernode_script("a", values).splitlines()[-1])[0] == "exec"


def test_a_site_writes_its_supernode_inputs_from_its_own_stores(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    subjects = (
        Subject("a", "a.nii.gz", "a_seg.nii.gz", "train", site="north"),
        Subject("b", "b.nii.gz", "b_seg.nii.gz", "val", site="north"),
    )
    cohort = WorkflowCohort(subjects, subjects, {"00000": ["a", "b"]}, ("test",))
    write_json("plan.json", {"hash": "abc"})
    val = [Subject("b", "pre/b/image.nii", "pre/b/label.nii.gz", "val")]
    config = {"model": {"name": "UNet"}}
    script = write_site_supernode(cohort, "north", ["st/a.h5"], val, config, "plan.json")
    folder = tmp_path / "results" / "sites" / "north" / "federated"
    assert script == folder.relative_to(tmp_path) / "supernode.sh"
    assert (folder / "stores.txt").read_text() == f"{tmp_path}/st/a.h5\n"
    assert [r["subject"] for r in read_tsv(folder / "val.tsv")] == ["b"]
    assert read_json(folder / "plan.json") == {"hash": "abc"}
    assert read_json(folder / "config.json") == config
    assert f'plan="{folder}/plan.json"' in (folder / "supernode.sh").read_text()
    with pytest.raises(CohortsegError, match="site south has no patch store"):
        write_site_supernode(cohort, "south", ["st/a.h5"], val, config, "plan.json")
    assert not (tmp_path / "results" / "sites" / "south").exists()


def test_sites_on_one_machine_share_its_threads():
    assert threads_per_site(3, {"OMP_NUM_THREADS": "8"}) == 2
    assert threads_per_site(3, {"OMP_NUM_THREADS": "2"}) == 1
    assert threads_per_site(1, {"OMP_NUM_THREADS": "4"}) == 4
    assert threads_per_site(2, {}) == max(1, len(os.sched_getaffinity(0)) // 2)


def test_federated_training_has_no_time_limit_unless_configured():
    jsonschema = pytest.importorskip("jsonschema")
    assert default_config()["federated"]["timeout_h"] is None
    assert inspect.signature(run_app).parameters["timeout_s"].default is None
    assert run_timeout_s(None) is None and run_timeout_s(1.5) == 5400
    schema = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
    config = default_config()
    config["federated"]["timeout_h"] = 0.25
    jsonschema.validate(config, schema)
    config["federated"]["timeout_h"] = 0
    with pytest.raises(jsonschema.ValidationError, match="timeout_h|0 is less than"):
        jsonschema.validate(config, schema)


@pytest.mark.slow
def test_a_configured_time_limit_stops_rounds_that_wait_for_a_site(tmp_path):
    """A real SuperLink whose one site never connects: the ServerApp waits for it, and
    federated.timeout_h (here 10 s) ends ``flwr run`` with an error that says what to change."""
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "plan.json").write_text(json.dumps(make_small_plan()))
    run_config = {
        "config": str(tmp_path / "config.json"),
        "plan": str(tmp_path / "plan.json"),
        "out-dir": str(tmp_path / "model"),
        "rounds": 1,
        "local-steps": 1,
        "proximal-mu": 0.0,
        "keep-optimizer": False,
        "min-sites": 1,
        "sites": "a",
    }
    limit_s = run_timeout_s(10 / 3600)  # federated.timeout_h: 10 s
    with local_federation({}, tmp_path / "flower") as federation:
        started = time.monotonic()
        with pytest.raises(CohortsegError) as caught:
            run_app(federation, run_config, tmp_path / "run.log", timeout_s=limit_s)
        waited = time.monotonic() - started
    assert 10 <= waited < 60
    assert "did not finish in 10 s" in str(caught.value)
    assert "federated.timeout_h" in str(caught.value) and "null for no limit" in str(caught.value)
    assert "Successfully started run" in (tmp_path / "run.log").read_text()
