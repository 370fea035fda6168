"""Federated training's two halves, free of Flower: a site's local round (the trainer's own
task step, augmentation, precision and sampling on the site's patch stores and device, from the
global weights, with FedProx's proximal term when asked), its validation Dice, and the global
model's checkpoint after each round, in the format inference reads
(:func:`cohortseg.networks.build.load_model`)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cohortseg.core.cohort import read_subjects
from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import read_json, write_json
from cohortseg.networks.build import build_network, resolve_model
from cohortseg.preprocessing.patches import PatchDataset
from cohortseg.training.batches import EpochBatchSampler, seed_everything
from cohortseg.training.checkpoints import save_checkpoint
from cohortseg.training.loop import (
    PRECISIONS,
    checkpoint_activations,
    lr_at,
    make_optimizer,
    task_step,
)
from cohortseg.training.losses import SegmentationLoss
from cohortseg.training.tasks import TrainingTask, volume_task

log = logging.getLogger(__name__)


State = dict[str, torch.Tensor]


def initial_state(model: Mapping, plan: Mapping, seed: int) -> State:
    """The global model's weights before round 1 (the same for the same seed), of the network
    ``model`` describes (``name: auto``: the plan's,
    :func:`cohortseg.networks.build.resolve_model`)."""
    seed_everything(seed)
    net = build_network(resolve_model(model, plan), len(plan["classes"]) + 1)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


class _ProximalLoss(torch.nn.Module):
    """The training loss (:class:`cohortseg.training.losses.SegmentationLoss`: Dice + cross-entropy,
    over the deep-supervision heads where the network has them), plus FedProx's
    ``mu / 2 · ||w − w_global||²``."""

    def __init__(self, net: torch.nn.Module, global_state: State, mu: float) -> None:
        super().__init__()
        self.base = SegmentationLoss()
        self.net, self.mu = net, mu
        self.anchor = [global_state[n].detach() for n, _ in net.named_parameters()]

    def forward(self, output: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        loss = self.base(output, label)
        if self.mu > 0:
            drift = sum(
                ((p - a) ** 2).sum()
                for p, a in zip(self.net.parameters(), self.anchor, strict=True)
            )
            loss = loss + self.mu / 2 * drift
        return loss


def site_task(config: Mapping, plan: Mapping, val_subjects: Sequence = ()) -> TrainingTask:
    """The task a site trains and validates, as central training's
    (:func:`cohortseg.training.tasks.volume_task` of the site's ``training.augmentation`` and
    ``inference`` keys, validated on its ``val_subjects``)."""
    augmentation = config["training"]["augmentation"]
    return volume_task(augmentation, plan, config["inference"], val_subjects)


def local_round(
    global_state: State,
    config: Mapping,
    plan: Mapping,
    stores: Sequence[str],
    server_round: int,
    rounds: int,
    steps: int,
    proximal_mu: float = 0.0,
    *,
    device: torch.device,
    optimizer_path: str | Path | None = None,
    task: TrainingTask | None = None,
) -> tuple[State, dict[str, float]]:
    """``steps`` training steps of one site from the global weights, on ``device`` (the
    site's ``training.device``: :func:`cohortseg.training.distributed.rank_device`).

    The trainer's own step (:func:`cohortseg.training.loop.task_step` of ``task``, by default
    :func:`site_task`: onto the device in ``training.precision``, the same augmentation, the
    optimizer of ``training.optimizer``, the training loss, bf16 autocast on GPU) and network
    (``model.name: auto`` resolved from the plan; ``training.activation_checkpointing``), the
    same seeded sampling (round ``r`` samples as epoch ``r - 1`` would), the learning rate of
    ``training.learning_rate`` decayed over the rounds as over epochs. The optimizer's state
    (AdamW's moments, SGD's momentum) is the site's own: with ``optimizer_path`` (a file in the
    site's folder) it is saved after the round and taken up again by the next one
    (``federated.keep_optimizer_state``), otherwise each round starts a fresh optimizer. It
    never leaves the site.

    Returns
    -------
    state
        The site's weights after the round (float32, on the CPU).
    metrics
        ``num-examples`` (the site's training patches, FedAvg's weight), ``train-loss`` (mean
        over the round's steps) and ``steps``.
    """
    training = config["training"]
    task = task or site_task(config, plan)
    seed_everything(int(training["seed"]) + server_round)
    dataset = PatchDataset(stores, plan_hash=plan["hash"])
    sampler, loader = _site_loader(dataset, training, steps, server_round, device)
    net = _site_network(task, global_state, config, plan, device)
    lr = lr_at(server_round - 1, rounds, float(training["learning_rate"]))
    optimizer = make_optimizer(
        net.parameters(), str(training["optimizer"]), lr, float(training["weight_decay"])
    )
    if optimizer_path is not None:
        resume_site_optimizer(optimizer, optimizer_path, server_round, lr, device)
    # FedProx's anchor: the global weights as they came (loading copied them into the net)
    dtype = next(net.parameters()).dtype
    anchor = {k: v.to(device=device, dtype=dtype) for k, v in global_state.items()}
    loss_fn = _ProximalLoss(net, anchor, proximal_mu)
    losses = []
    for step, (image, label) in enumerate(loader):
        seeds = sampler.sample_seeds(server_round - 1, step)
        losses.append(float(task_step(task, net, optimizer, loss_fn, image, label, seeds)))
    if optimizer_path is not None:
        save_checkpoint(
            optimizer_path, {"round": server_round, "optimizer_state": optimizer.state_dict()}
        )
    log.info(
        "round %d: %d steps on %s (%s)", server_round, len(losses), device, training["precision"]
    )
    state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in net.state_dict().items()}
    metrics = {
        "num-examples": float(len(dataset)),
        "train-loss": float(sum(losses) / len(losses)) if losses else math.nan,
        "steps": float(len(losses)),
    }
    return state, metrics


def _site_loader(
    dataset: PatchDataset, training: Mapping, steps: int, server_round: int, device: torch.device
) -> tuple[EpochBatchSampler, DataLoader]:
    """The round's sampler and loader: ``steps`` batches of ``training.batch_size`` patches,
    ordered as epoch ``server_round - 1`` of central training with the same seed."""
    seed = int(training["seed"])
    sampler = EpochBatchSampler(len(dataset), int(training["batch_size"]), steps, seed, 0, 1)
    sampler.set_epoch(server_round - 1)
    loader = DataLoader(
        dataset, batch_sampler=sampler, num_workers=0, pin_memory=device.type == "cuda"
    )
    return sampler, loader


def _site_network(
    task: TrainingTask, state: State, config: Mapping, plan: Mapping, device: torch.device
) -> torch.nn.Module:
    """The task's network (``model``, ``auto`` resolved from the plan) on ``device`` in
    ``training.precision``, with the weights ``state``, in training mode."""
    training = config["training"]
    dtype = PRECISIONS[str(training["precision"])]
    model = resolve_model(config["model"], plan)
    net = task.network(model, len(plan["classes"]) + 1, device, dtype)
    net.load_state_dict(state)
    if training["activation_checkpointing"]:
        checkpoint_activations(net)
    return net.train()


def resume_site_optimizer(
    optimizer: torch.optim.Optimizer,
    path: str | Path,
    server_round: int,
    learning_rate: float,
    device: torch.device,
) -> bool:
    """Load the optimizer state a site saved at ``path`` after the round before
    ``server_round`` into ``optimizer``, at this round's ``learning_rate``. Returns whether
    it did (a missing file, or one from another round, e.g. a round repeated after the
    coordinator was restarted, leaves the optimizer fresh)."""
    path = Path(path)
    if not path.exists():
        return False
    saved = torch.load(path, map_location=device, weights_only=False)
    if int(saved.get("round", -1)) != server_round - 1:
        log.info(
            "%s: saved after round %s, not %d: a fresh optimizer",
            path,
            saved.get("round"),
            server_round - 1,
        )
        return False
    optimizer.load_state_dict(saved["optimizer_state"])
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    return True


def site_validation_dice(
    state: State,
    config: Mapping,
    plan: Mapping,
    val_manifest: str,
    *,
    device: torch.device,
) -> dict[str, float]:
    """Validation Dice of the weights ``state`` on a site's val subjects (``val_manifest``: a
    preprocessing manifest; empty: none), on ``device`` in ``training.precision``, by the
    site task's validation (:func:`site_task`, as central training validates):
    ``num-examples`` (their number, the weight), ``val-dice-mean`` and ``val-dice-{class}``."""
    subjects = [s for s in read_subjects(val_manifest) if s.split == "val"] if val_manifest else []
    classes = list(plan["classes"])
    if not subjects:
        return {
            "num-examples": 0.0,
            "val-dice-mean": 0.0,
            **{f"val-dice-{c}": 0.0 for c in classes},
        }
    task = site_task(config, plan, subjects)
    net = _site_network(task, state, config, plan, device).eval()
    with torch.no_grad():
        dice = task.validate(net, device)
    return {
        "num-examples": float(len(subjects)),
        "val-dice-mean": float(sum(dice) / len(dice)),
        **{f"val-dice-{c}": float(d) for c, d in zip(classes, dice, strict=True)},
    }


# What every site must train with for the rounds to be one training: the classes, the network
# and the optimisation (not the device or its precision, which follow each site's hardware).
AGREED_KEYS = (
    "classes",
    "model",
    "training.optimizer",
    "training.learning_rate",
    "training.weight_decay",
    "training.batch_size",
    "training.augmentation",
    "training.seed",
)


def agreed_settings(config: Mapping) -> dict:
    """The values of :data:`AGREED_KEYS` (dotted paths) in ``config``."""
    values = {}
    for key in AGREED_KEYS:
        value = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        values[key] = value
    return values


def check_agreement(site: str, own: Mapping, coordinator: Mapping) -> None:
    """Check that a site's settings (``own``, :func:`agreed_settings` of its ``config.json``)
    are the coordinator's, which every round's message carries.

    Raises
    ------
    CohortsegError
        Naming every key that differs, with both values.
    """
    differ = [
        f"{k} ({json.dumps(own.get(k))} here, {json.dumps(coordinator.get(k))} at the coordinator)"
        for k in sorted(set(own) | set(coordinator))
        if own.get(k) != coordinator.get(k)
    ]
    if differ:
        raise CohortsegError(
            f"site {site}: its config differs from the coordinator's in {'; '.join(differ)}."
            " Every site trains with the federation's shared settings: make the site's"
            f" results/sites/{site}/federated/config.json with the same fed.yaml"
        )


def site_position(site: str, sites: str) -> int:
    """``site``'s position (from 0) in the coordinator's comma-separated ``sites`` list, which
    every round's message carries: how a site's replies are told apart from the others'.

    Raises
    ------
    CohortsegError
        If ``site`` (a SuperNode's node config ``site``) is not in the list.
    """
    names = [s for s in sites.split(",") if s]
    if site not in names:
        raise CohortsegError(
            f"site {site!r} (this SuperNode's node config `site`) is not one of the"
            f" coordinator's sites: {', '.join(names) or 'none'}; start the SuperNode with the"
            " site name the coordinator's `sites=` lists"
        )
    return names.index(site)


def dropped_sites(sites: Sequence[str], replied: Sequence[str], min_sites: int) -> list[str]:
    """The sites of ``sites`` that did not reply in a round (in their order).

    Raises
    ------
    CohortsegError
        If fewer than ``min_sites`` replied: the message names who replied and who dropped out.
    """
    dropped = [s for s in sites if s not in set(replied)]
    if len(sites) - len(dropped) < min_sites:
        raise CohortsegError(
            f"only {len(sites) - len(dropped)} of {len(sites)} site(s) completed the round "
            f"({', '.join(s for s in sites if s not in dropped) or 'none'}); dropped out: "
            f"{', '.join(dropped)}; federated.min_sites = {min_sites}. The global model of the "
            "last complete round is saved: rerun when the sites are back to resume from it"
        )
    return dropped


def record_round(out_dir: str | Path, row: Mapping[str, float]) -> None:
    """Add one round's row to ``rounds_log.json`` in ``out_dir`` (rows of later rounds, left
    by a coordinator killed after its last checkpoint, are dropped)."""
    path = Path(out_dir) / "rounds_log.json"
    rows = read_json(path) if path.exists() else []
    rows = [r for r in rows if r["round"] < row["round"]] + [dict(row)]
    write_json(path, rows)


def save_global(
    out_dir: str | Path, server_round: int, state: State, config: Mapping, plan: Mapping
) -> Path:
    """Write the global model after ``server_round`` as ``round_{N}.pt`` and ``best.pt`` (the
    checkpoint inference reads) in ``out_dir``, and ``rounds.json`` (the last round done), from
    which a restarted coordinator resumes."""
    out = Path(out_dir)
    checkpoint = {
        "plan": plan,
        "model_config": resolve_model(config["model"], plan),
        "model_state": state,
        "federated_round": server_round,
    }
    path = out / f"round_{server_round:04d}.pt"
    save_checkpoint(path, checkpoint)
    save_checkpoint(out / "best.pt", checkpoint)
    write_json(out / "rounds.json", {"last_round": server_round, "checkpoint": path.name})
    return path


def resume_point(out_dir: str | Path) -> tuple[int, State | None]:
    """The last round whose global model was saved in ``out_dir`` and its weights, or
    ``(0, None)`` when none was."""
    marker = Path(out_dir) / "rounds.json"
    if not marker.exists():
        return 0, None
    done = read_json(marker)
    state = torch.load(Path(out_dir) / done["checkpoint"], map_location="cpu", weights_only=False)
    return int(done["last_round"]), state["model_state"]
