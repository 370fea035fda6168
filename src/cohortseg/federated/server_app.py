"""The ServerApp of federated training: the coordinator's rounds of FedAvg, FedProx with
``proximal-mu`` > 0 or FedAvgM with ``server-learning-rate`` != 1, sites weighted by their
training patches; the global model saved after every round, and resumed from after a restart.
Only weights and metrics pass through Flower; each site's half is
:mod:`cohortseg.federated.client_app`.

The coordinator can record every file its process opens (``open-log`` in the run config;
:mod:`cohortseg.federated.audit`), so that a test can check that it touched no patch store or
image.
"""

from __future__ import annotations

import json
import logging
import time

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedAvgM, FedProx
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import read_json
from cohortseg.federated.audit import record_opened_files
from cohortseg.federated.task import (
    agreed_settings,
    dropped_sites,
    initial_state,
    record_round,
    resume_point,
    save_global,
)

log = logging.getLogger(__name__)


server_app = ServerApp()


@server_app.main()
def coordinate(grid: Grid, context: Context) -> None:
    """Run the remaining rounds of ``rounds`` and save the global model after each."""
    rc = context.run_config
    record_opened_files(str(rc["open-log"]))
    config, plan = read_json(str(rc["config"])), read_json(str(rc["plan"]))
    out_dir, rounds = str(rc["out-dir"]), int(rc["rounds"])
    mu, min_sites = float(rc["proximal-mu"]), int(rc["min-sites"])
    done, state = resume_point(out_dir)
    if state is None:
        state = initial_state(config["model"], plan, int(config["training"]["seed"]))
    if done >= rounds:
        log.info("all %d rounds done already", rounds)
        return
    log.info("rounds %d..%d of %d, at least %d site(s)", done + 1, rounds, rounds, min_sites)
    common = {
        "fraction_evaluate": 1.0,
        "min_train_nodes": min_sites,
        "min_evaluate_nodes": min_sites,
        "min_available_nodes": min_sites,
    }
    sites = str(rc["sites"]).split(",")
    server_lr = float(rc.get("server-learning-rate", 1.0))
    strategy = make_strategy(sites, min_sites, mu, server_lr, common)

    def save(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None  # the initial weights
        save_global(out_dir, done + server_round, arrays.to_torch_state_dict(), config, plan)
        return MetricRecord({"round": done + server_round})

    site_list = ",".join(sites)  # each site finds its position in it
    train_config = {
        "sites": site_list,
        "agreed": json.dumps(agreed_settings(config)),  # each site checks its own against it
        "rounds": rounds,
        "round-offset": done,
        "local-steps": int(rc["local-steps"]),
        "keep-optimizer": bool(rc.get("keep-optimizer", False)),
    }
    if mu <= 0:
        train_config["proximal-mu"] = 0.0
    log_rounds = _RoundLog(out_dir, done, sites, plan["classes"], strategy)
    log_rounds.state_mb = sum(t.numel() * t.element_size() for t in state.values()) / 2**20
    strategy.train_metrics_aggr_fn = log_rounds.train
    strategy.evaluate_metrics_aggr_fn = log_rounds.evaluate
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(state),
        num_rounds=rounds - done,
        train_config=ConfigRecord(train_config),
        evaluate_config=ConfigRecord({"sites": site_list}),
        evaluate_fn=save,
    )


class _SiteAware:
    """A strategy mixin: before aggregating a round's training replies, name the sites that
    did not reply (dropped out: their SuperNode stopped or failed mid-round) and stop the run
    with a clear message if fewer than ``min_sites`` replied; the global model of the last
    complete round stays saved, so a rerun resumes from it."""

    def __init__(self, *args, sites: list[str], min_sites: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sites, self.min_sites, self.dropped = sites, min_sites, []

    def aggregate_train(self, server_round: int, replies):
        replies = list(replies)
        for m in replies:  # a ClientApp's exception: Flower's reply carries its message
            if m.has_error():
                log.warning("round %d: a site failed: %s", server_round, m.error.reason)
        replied = [
            self.sites[int(m.content["metrics"]["site-index"])]
            for m in replies
            if not m.has_error() and "metrics" in m.content
        ]
        self.dropped = dropped_sites(self.sites, replied, self.min_sites)
        if self.dropped:
            log.warning("round %d: site(s) dropped out: %s", server_round, ", ".join(self.dropped))
        return super().aggregate_train(server_round, replies)


class _SiteAwareFedAvg(_SiteAware, FedAvg):
    pass


class _SiteAwareFedProx(_SiteAware, FedProx):
    pass


class _SiteAwareFedAvgM(_SiteAware, FedAvgM):
    pass


def make_strategy(
    sites: list[str], min_sites: int, mu: float, server_lr: float, common: dict
) -> _SiteAware:
    """FedProx when ``mu`` > 0; FedAvg with a server learning rate (Flower's ``FedAvgM``,
    no momentum) when ``server_lr`` is not 1: the global model moves ``server_lr`` times the
    sites' mean update; plain FedAvg otherwise.

    Raises
    ------
    CohortsegError
        If both are asked for (FedProx has no server learning rate).
    """
    if mu > 0 and server_lr != 1.0:
        raise CohortsegError(
            "federated.proximal_mu > 0 (FedProx) and federated.server_learning_rate != 1"
            " (FedAvgM) cannot be combined: choose one"
        )
    if mu > 0:
        return _SiteAwareFedProx(sites=sites, min_sites=min_sites, proximal_mu=mu, **common)
    if server_lr != 1.0:
        return _SiteAwareFedAvgM(
            sites=sites, min_sites=min_sites, server_learning_rate=server_lr, **common
        )
    return _SiteAwareFedAvg(sites=sites, min_sites=min_sites, **common)


class _RoundLog:
    """Aggregates the sites' metrics each round (weighted as FedAvg weights them) and appends
    the round's row (training loss, validation Dice per class, each site's mean validation
    Dice, the sites that dropped out, the round's wall time ``round_s`` and ``payload_mb``: the
    weights sent to and returned by the sites that trained, in MiB) to the run's round log
    (:func:`cohortseg.federated.task.record_round`)."""

    def __init__(
        self, out_dir: str, done: int, sites: list[str], classes: list[str], strategy: _SiteAware
    ) -> None:
        self.out_dir, self.round, self.sites, self.classes = out_dir, done, sites, classes
        self.strategy, self.state_mb = strategy, float("nan")
        self.train_loss, self.started = float("nan"), time.monotonic()

    def train(self, records: list[RecordDict], key: str) -> MetricRecord:
        aggregated = aggregate_metricrecords(records, key)
        aggregated.pop("site-index", None)
        self.round += 1
        self.train_loss = float(aggregated.get("train-loss", float("nan")))
        return aggregated

    def evaluate(self, records: list[RecordDict], key: str) -> MetricRecord:
        weighted = [r for r in records if next(iter(r.metric_records.values()))[key] > 0]
        aggregated = aggregate_metricrecords(weighted, key) if weighted else MetricRecord()
        trained = len(self.sites) - len(self.strategy.dropped)
        row = {
            "round": self.round,
            "train_loss": self.train_loss,
            "sites_trained": trained,
            "dropped": ",".join(self.strategy.dropped),
            "round_s": round(time.monotonic() - self.started, 3),
            "payload_mb": round(2 * trained * self.state_mb, 3),
        }
        self.started = time.monotonic()
        if weighted:
            row["val_dice_mean"] = float(aggregated["val-dice-mean"])
            row.update({f"val_dice_{c}": float(aggregated[f"val-dice-{c}"]) for c in self.classes})
        for record in weighted:
            metrics = next(iter(record.metric_records.values()))
            site = self.sites[int(metrics["site-index"])]
            row[f"val_dice_mean@{site}"] = float(metrics["val-dice-mean"])
        record_round(self.out_dir, row)
        return aggregated
