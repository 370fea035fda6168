"""The ClientApp of federated training: a site's local round on its own patch stores and its
validation Dice of the global model, on the device its ``training.device`` picks (a SuperNode
started with a GPU trains on it). Only weights and metrics leave the site."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from cohortseg.core.io import read_json
from cohortseg.federated.audit import record_opened_files
from cohortseg.federated.task import (
    agreed_settings,
    check_agreement,
    local_round,
    site_position,
    site_validation_dice,
)
from cohortseg.training.distributed import rank_device

log = logging.getLogger(__name__)


client_app = ClientApp()


@client_app.train()
def site_round(msg: Message, context: Context) -> Message:
    """One local round on this site's patch stores (node config ``stores``: a file listing
    them, one per line; ``config``, ``plan``: JSON files the site holds), on the device of the
    site's ``training.device`` (:func:`cohortseg.training.distributed.rank_device`)."""
    node = context.node_config
    record_opened_files(str(node.get("open-log", "")))
    cpu_before, started = time.process_time(), time.monotonic()
    cfg = msg.content["config"]
    config, plan = read_json(str(node["config"])), read_json(str(node["plan"]))
    check_agreement(str(node["site"]), agreed_settings(config), json.loads(str(cfg["agreed"])))
    stores = [s for s in Path(str(node["stores"])).read_text().splitlines() if s]
    server_round = int(cfg["round-offset"]) + int(cfg["server-round"])
    device = rank_device(str(config["training"]["device"]))
    # the site's own optimizer state, beside its stores' list (federated.keep_optimizer_state)
    keep = bool(cfg.get("keep-optimizer", False))
    optimizer_path = Path(str(node["stores"])).parent / "optimizer.pt" if keep else None
    state, metrics = local_round(
        msg.content["arrays"].to_torch_state_dict(),
        config,
        plan,
        stores,
        server_round,
        int(cfg["rounds"]),
        int(cfg["local-steps"]),
        float(cfg["proximal-mu"]),
        device=device,
        optimizer_path=optimizer_path,
    )
    metrics["site-index"] = float(site_position(str(node["site"]), str(cfg["sites"])))
    log.info(
        "site %s: round %d on %s, %s; %.1f s (%.1f s CPU; the ClientApp process had used %.1f s"
        " CPU before the round, starting)",
        node.get("site", "?"),
        server_round,
        device,
        metrics,
        time.monotonic() - started,
        time.process_time() - cpu_before,
        cpu_before,
    )
    content = RecordDict({"arrays": ArrayRecord(state), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@client_app.evaluate()
def site_validation(msg: Message, context: Context) -> Message:
    """The global model's validation Dice on this site's val subjects (node config ``val``: a
    preprocessing manifest of them; none: weight 0), on the device of its ``training.device``."""
    node = context.node_config
    record_opened_files(str(node.get("open-log", "")))
    config, plan = read_json(str(node["config"])), read_json(str(node["plan"]))
    metrics = site_validation_dice(
        msg.content["arrays"].to_torch_state_dict(),
        config,
        plan,
        str(node.get("val", "")),
        device=rank_device(str(config["training"]["device"])),
    )
    where = site_position(str(node["site"]), str(msg.content["config"]["sites"]))
    metrics["site-index"] = float(where)
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
