"""Federated training on Flower: a site's local round, the global model's checkpoints, and real
SuperLink and SuperNode processes running rounds of FedAvg between two sites that never see
each other's files."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import write_tsv
from cohortseg.federated.credentials import write_node_keys, write_tls_certificates
from cohortseg.federated.deployment import free_port, local_federation, node_config, run_app
from cohortseg.federated.task import (
    agreed_settings,
    check_agreement,
    dropped_sites,
    initial_state,
    local_round,
    resume_point,
    resume_site_optimizer,
    save_global,
    site_position,
    site_task,
)
from cohortseg.networks.build import build_network, load_model
from tests.training.test_loop import CONFIG, make_inputs

CPU = torch.device("cpu")


def distance(a, b) -> float:
    return float(
        sum(((a[k].float() - b[k].float()) ** 2).sum() for k in a if a[k].is_floating_point())
    )


def test_local_round_trains_from_the_global_weights_and_fedprox_stays_closer(
    tmp_path, phantom_files, small_plan
):
    stores, _ = make_inputs(tmp_path, phantom_files, small_plan)
    start = initial_state(CONFIG["model"], small_plan, seed=0)
    assert distance(start, initial_state(CONFIG["model"], small_plan, 0)) == 0
    plain, metrics = local_round(start, CONFIG, small_plan, stores, 1, 2, steps=3, device=CPU)
    again, _ = local_round(start, CONFIG, small_plan, stores, 1, 2, steps=3, device=CPU)
    prox, _ = local_round(
        start, CONFIG, small_plan, stores, 1, 2, steps=3, proximal_mu=100.0, device=CPU
    )
    assert metrics["num-examples"] == 12 and metrics["steps"] == 3
    assert distance(plain, again) == 0  # seeded, one process: the same steps
    assert 0 < distance(prox, start) < distance(plain, start)


def test_a_site_keeps_its_optimizer_state_for_the_next_round_only(
    tmp_path, phantom_files, small_plan
):
    stores, _ = make_inputs(tmp_path, phantom_files, small_plan)
    start = initial_state(CONFIG["model"], small_plan, seed=0)
    saved = tmp_path / "site" / "optimizer.pt"
    local_round(start, CONFIG, small_plan, stores, 1, 3, steps=2, device=CPU, optimizer_path=saved)
    net = build_network(CONFIG["model"], len(small_plan["classes"]) + 1)
    fresh = lambda: torch.optim.AdamW(net.parameters(), lr=1.0)  # noqa: E731
    taken = fresh()
    assert resume_site_optimizer(taken, saved, 2, 0.005, torch.device("cpu"))
    assert taken.state_dict()["state"][0]["step"] == 2  # AdamW's moments after round 1's steps
    assert taken.param_groups[0]["lr"] == 0.005  # at round 2's learning rate
    assert not resume_site_optimizer(fresh(), saved, 3, 0.005, torch.device("cpu"))  # stale
    assert not resume_site_optimizer(fresh(), tmp_path / "none.pt", 2, 0.005, torch.device("cpu"))


def test_auto_network_trains_a_federated_round_with_its_deep_supervision_and_sgd(
    tmp_path, phantom_files, small_plan
):
    """model.name auto in federated training: the plan's DynUNet (narrowed for speed) from
    round 1's initial weights to the global checkpoint that inference loads."""
    from cohortseg.networks.topology import auto_network
    from cohortseg.preprocessing.plan import plan_hash

    network = auto_network(small_plan["target_spacing_mm"], small_plan["patch_size"])
    plan = {**small_plan, "patch_size": network.pop("patch_size"), "network": network}
    plan["hash"] = plan_hash(plan)
    stores, _ = make_inputs(tmp_path, phantom_files, plan)
    config = {
        **CONFIG,
        "model": {"name": "auto", "kwargs": {"filters": [4, 8, 16]}},
        "training": {**CONFIG["training"], "optimizer": "sgd"},
    }
    start = initial_state(config["model"], plan, seed=0)
    state, metrics = local_round(start, config, plan, stores, 1, 2, steps=2, device=CPU)
    assert metrics["steps"] == 2 and 0 < metrics["train-loss"] < 10
    assert 0 < distance(state, start)
    save_global(tmp_path / "model", 1, state, config, plan)
    net, _ = load_model(str(tmp_path / "model" / "best.pt"), torch.device("cpu"))
    assert type(net).__name__ == "DynUNet"
    assert distance({k: v for k, v in net.state_dict().items()}, state) == 0


def recording(task, seen: list):
    """``task`` with its augmentation noting where each step's batch is (the step after it
    trains on what it returns)."""

    def augment(image, label, seeds):
        seen.append((image.device, image.dtype, label.device))
        return task.augment(image, label, seeds)

    return dataclasses.replace(task, augment=augment)


def test_local_round_steps_on_the_device_and_in_the_precision_it_is_given(
    tmp_path, phantom_files, small_plan
):
    stores, _ = make_inputs(tmp_path, phantom_files, small_plan)
    config = {**CONFIG, "training": {**CONFIG["training"], "precision": "float64"}}
    start = initial_state(config["model"], small_plan, seed=0)
    seen: list = []
    task = recording(site_task(config, small_plan), seen)
    state, metrics = local_round(
        start, config, small_plan, stores, 1, 2, steps=2, device=CPU, task=task
    )
    assert seen == [(CPU, torch.float64, CPU)] * 2 and metrics["steps"] == 2
    # the site's weights go back as float32, whatever its precision
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
    # the same step as central training: without the recording, the same weights
    plain, _ = local_round(start, config, small_plan, stores, 1, 2, steps=2, device=CPU)
    assert distance(plain, state) == 0


def site_message(state: dict, steps: int) -> object:
    """Round 1's training message to site ``a`` as its SuperNode delivers it to the
    ClientApp (what the ServerApp's strategy sends, with Flower's metadata)."""
    from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, RecordDict

    config = {
        "sites": "a",
        "agreed": json.dumps(agreed_settings(CONFIG)),
        "rounds": 2,
        "round-offset": 0,
        "server-round": 1,
        "local-steps": steps,
        "proximal-mu": 0.0,
        "keep-optimizer": False,
    }
    content = RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord(config)})
    metadata = Metadata(1, "m1", 0, 1, "", "1", time.time(), 3600.0, "train")
    return Message(content=content, metadata=metadata)


def test_the_client_app_trains_and_validates_on_the_device_training_device_picks(
    tmp_path, phantom_files, small_plan, caplog
):
    """Flower's ClientApp, called as its SuperNode calls it: the site's ``training.device``
    reaches the round and its validation (a site asking for CUDA where there is none is told
    so, instead of training on the CPU unnoticed)."""
    from flwr.app import Context, RecordDict

    from cohortseg.federated.client_app import site_round, site_validation

    stores, val = make_inputs(tmp_path, phantom_files, small_plan)
    (tmp_path / "stores.txt").write_text("\n".join(stores) + "\n")
    write_tsv(tmp_path / "val.tsv", [vars(v) for v in val], ["subject", "split", "image", "label"])
    (tmp_path / "plan.json").write_text(json.dumps(small_plan))
    node = {"site": "a", "stores": str(tmp_path / "stores.txt"), "val": str(tmp_path / "val.tsv")}
    node |= {"config": str(tmp_path / "config.json"), "plan": str(tmp_path / "plan.json")}
    context = Context(1, 1, node, RecordDict(), {})
    start = initial_state(CONFIG["model"], small_plan, seed=0)

    (tmp_path / "config.json").write_text(json.dumps(CONFIG))  # training.device: cpu
    caplog.set_level(logging.INFO, logger="cohortseg")
    reply = site_round(site_message(start, steps=2), context)
    assert reply.content["metrics"]["steps"] == 2
    assert "site a: round 1 on cpu" in caplog.text and "round 1: 2 steps on cpu" in caplog.text
    scores = site_validation(site_message(start, steps=2), context).content["metrics"]
    assert scores["num-examples"] == 1 and 0 <= scores["val-dice-mean"] <= 1

    if torch.cuda.is_available():
        pytest.skip("the GPU suite runs the site's round on CUDA (benchmarks/gpu_suite.sh)")
    cuda = {**CONFIG, "training": {**CONFIG["training"], "device": "cuda"}}
    (tmp_path / "config.json").write_text(json.dumps(cuda))
    for app in (site_round, site_validation):
        with pytest.raises(CohortsegError, match=r"training.device: 'cuda', but .* no CUDA"):
            app(site_message(start, steps=2), context)


def test_global_model_checkpoint_is_what_inference_loads_and_resume_finds(tmp_path, small_plan):
    state = initial_state(CONFIG["model"], small_plan, seed=0)
    assert resume_point(tmp_path) == (0, None)
    save_global(tmp_path, 3, state, CONFIG, small_plan)
    done, resumed = resume_point(tmp_path)
    assert done == 3 and distance(resumed, state) == 0
    net, plan = load_model(str(tmp_path / "best.pt"), torch.device("cpu"))
    assert plan["hash"] == small_plan["hash"]


def test_the_strategy_is_fedavg_fedprox_or_fedavgm_with_a_server_learning_rate():
    from flwr.serverapp.strategy import FedAvg, FedAvgM, FedProx

    from cohortseg.federated.server_app import make_strategy

    common = {"min_train_nodes": 2}
    plain = make_strategy(["a", "b"], 2, 0.0, 1.0, common)
    assert type(plain).__mro__[2] is FedAvg and not isinstance(plain, FedProx | FedAvgM)
    assert isinstance(make_strategy(["a", "b"], 2, 0.1, 1.0, common), FedProx)
    moved = make_strategy(["a", "b"], 2, 0.0, 2.0, common)
    assert isinstance(moved, FedAvgM) and moved.server_learning_rate == 2.0
    assert moved.server_momentum == 0.0
    with pytest.raises(CohortsegError, match="cannot be combined"):
        make_strategy(["a", "b"], 2, 0.1, 2.0, common)


def test_node_and_run_config_are_toml_pairs():
    assert node_config({"keep": True, "off": False, "site": "a", "steps": 2, "mu": 0.5}) == (
        'keep=true off=false site="a" steps=2 mu=0.5'
    )


def test_a_round_names_the_sites_that_dropped_out_and_needs_min_sites():
    assert dropped_sites(["a", "b", "c"], ["c", "a"], 2) == ["b"]
    assert dropped_sites(["a", "b"], ["b", "a"], 2) == []
    with pytest.raises(CohortsegError) as caught:
        dropped_sites(["a", "b", "c"], ["c"], 2)
    assert str(caught.value).startswith(
        "only 1 of 3 site(s) completed the round (c); dropped out: a, b; federated.min_sites = 2"
    )


def test_a_site_is_known_by_its_name_in_the_coordinators_list():
    assert site_position("south", "north,south") == 1
    with pytest.raises(CohortsegError) as caught:
        site_position("west", "north,south")
    assert "site 'west'" in str(caught.value) and "north, south" in str(caught.value)


def test_a_site_whose_settings_differ_from_the_coordinators_is_refused_naming_them():
    coordinator = agreed_settings(CONFIG)
    check_agreement("north", agreed_settings(json.loads(json.dumps(CONFIG))), coordinator)
    # the device may differ (a site with a GPU); the learning rate and the classes may not
    other = {**CONFIG, "classes": ["organ"]}
    other["training"] = {**CONFIG["training"], "learning_rate": 0.5, "device": "cuda"}
    with pytest.raises(CohortsegError) as caught:
        check_agreement("north", agreed_settings(other), coordinator)
    message = str(caught.value)
    assert message.startswith("site north: its config differs from the coordinator's in classes")
    assert f"training.learning_rate (0.5 here, {CONFIG['training']['learning_rate']}" in message
    assert "device" not in message


@pytest.mark.slow
def test_two_sites_train_rounds_through_real_flower_processes_and_stay_apart(
    tmp_path, phantom_files, small_plan
):
    """As deployed: the coordinator and two hospitals in working directories of their own,
    TLS (the coordinator's CA) and SuperNode authentication (each site's key pair, its public
    key registered by the coordinator; an unregistered SuperNode is refused)."""
    stores, _ = make_inputs(tmp_path / "inputs", phantom_files, small_plan)
    shared = tmp_path / "coordinator"
    shared.mkdir()
    (shared / "config.json").write_text(json.dumps(CONFIG))
    (shared / "plan.json").write_text(json.dumps(small_plan))
    credentials = {**write_tls_certificates(shared / "certs", ["localhost", "127.0.0.1"])}
    credentials["nodes"] = {}
    sites = {}
    for site, mine in (("a", stores[:2]), ("b", stores[2:])):
        folder = tmp_path / f"site-{site}"
        folder.mkdir()
        keys = write_node_keys(folder / "keys", site)  # the private key stays at the site
        public = shutil.copy(keys["public"], shared / f"{site}.pub")  # sent to the coordinator
        credentials["nodes"][site] = {"private": keys["private"], "public": public}
        moved = []
        for store in mine:
            target = folder / Path(store).name
            Path(store).rename(target)
            moved.append(str(target))
        (folder / "stores.txt").write_text("\n".join(moved) + "\n")
        (folder / "config.json").write_text(json.dumps(CONFIG))
        (folder / "plan.json").write_text(json.dumps(small_plan))
        sites[site] = {
            "stores": str(folder / "stores.txt"),
            "config": str(folder / "config.json"),
            "plan": str(folder / "plan.json"),
            "open-log": str(tmp_path / f"opened-{site}.txt"),
        }
    run_config = {
        "config": str(shared / "config.json"),
        "plan": str(shared / "plan.json"),
        "out-dir": str(shared / "model"),
        "rounds": 1,
        "local-steps": 2,
        "proximal-mu": 0.0,
        "keep-optimizer": True,
        "min-sites": 2,
        "open-log": str(tmp_path / "opened-coordinator.txt"),
        "sites": "a,b",
    }
    homes = {site: tmp_path / f"site-{site}" for site in sites}
    with local_federation(sites, shared / "flower", 60, credentials, homes) as federation:
        rogue = write_node_keys(tmp_path / "rogue", "rogue")  # a key never registered
        intruder = subprocess.Popen(
            [str(Path(sys.executable).parent / "flower-supernode"), "--superlink"]
            + [str(federation["address"]), "--root-certificates", str(credentials["ca"])]
            + ["--auth-supernode-private-key", str(rogue["private"])]
            + ["--host", "127.0.0.1", "--port", str(free_port())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "FLWR_HOME": str(tmp_path / "rogue")},
        )
        try:
            run_app(federation, run_config, tmp_path / "flwr-run.log", timeout_s=600)
            assert intruder.wait(timeout=120) != 0  # refused: "No SuperNode found with the…"
        finally:
            intruder.kill()
        assert json.loads((shared / "model" / "rounds.json").read_text())["last_round"] == 1
        # a restarted coordinator resumes after the last saved round, and site b's SuperNode is
        # stopped (SIGTERM, as `scancel` sends) in the middle of that round 2, once its
        # ClientApp has opened its patch stores: the round completes with site a (min-sites 1)
        # and names b; with min-sites 2 it would stop (unit test above)
        opened_b = tmp_path / "opened-b.txt"
        before = len(opened_b.read_text().splitlines())
        run = threading.Thread(
            target=run_app,
            # 30 local steps: a window of seconds between b opening its stores and replying,
            # whatever the CPU's speed, for the stop to land mid-round
            args=(
                federation,
                {**run_config, "rounds": 2, "min-sites": 1, "local-steps": 30},
                tmp_path / "r3.log",
            ),
            kwargs={"timeout_s": 600},
        )
        run.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not [
            p for p in opened_b.read_text().splitlines()[before:] if p.endswith(".h5")
        ]:
            time.sleep(0.1)
        federation["processes"]["supernode-b"].terminate()
        run.join(timeout=600)
    log = (tmp_path / "r3.log").read_text()
    assert "site(s) dropped out: b" in log  # and round 1 kept: "dropped" below
    assert json.loads((shared / "model" / "rounds.json").read_text())["last_round"] == 2
    assert sorted(p.name for p in (shared / "model").glob("round_*.pt")) == [
        f"round_{r:04d}.pt" for r in (1, 2)
    ]
    load_model(str(shared / "model" / "best.pt"), torch.device("cpu"))
    rounds = json.loads((shared / "model" / "rounds_log.json").read_text())
    assert [r["round"] for r in rounds] == [1, 2]  # sites without val subjects: no Dice
    assert [r["dropped"] for r in rounds] == ["", "b"]
    # isolation, checked: each site opened its own stores and none of the other's files
    opened = {s: (tmp_path / f"opened-{s}.txt").read_text().splitlines() for s in ("a", "b")}
    for site, other in (("a", "b"), ("b", "a")):
        assert any(
            p.startswith(f"{tmp_path}/site-{site}/") and p.endswith(".h5") for p in opened[site]
        )
        assert not [p for p in opened[site] if p.startswith(f"{tmp_path}/site-{other}/")]
    # each site's optimizer state stays in its own folder, carried over to the next round
    assert torch.load(tmp_path / "site-a" / "optimizer.pt", weights_only=False)["round"] == 2
    coordinator = (tmp_path / "opened-coordinator.txt").read_text().splitlines()
    data = (".h5", ".nii", ".nii.gz")
    assert not [p for p in coordinator if p.endswith(data) or p.startswith(f"{tmp_path}/site-")]
