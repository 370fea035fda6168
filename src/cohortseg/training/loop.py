"""The one trainer, for every modality and backend: patches from the HDF5 stores, the task's loss
(:class:`~cohortseg.training.tasks.TrainingTask`: volumes, slides…), AdamW or SGD, validation
Dice every ``training.val_every`` epochs, best and last checkpoints and a per-epoch log;
data-parallel over ranks (``training.backend``) and resumable from ``last.pt`` at any step.
:func:`fit` trains a task; :func:`train` is :func:`fit` with the volume task.

Batch order and augmentation are pure functions of the seed, the epoch and the position in the
epoch's global sample order (:mod:`cohortseg.training.batches`), so a run resumed mid-epoch from a
checkpoint ends with the same weights, bit for bit on the CPU, as one that never stopped, and
``n`` ranks with batch ``b`` see the same samples, augmented the same way, as one rank with
batch ``n·b``.

Stopping (:mod:`cohortseg.training.checkpoints`): SIGTERM or SIGUSR1 (what SLURM sends with
``--signal`` before the time limit) makes every rank finish the current step; rank 0 writes
``last.pt`` and
:func:`fit` raises :class:`~cohortseg.training.checkpoints.TrainingInterrupted`, which
``scripts/train.py`` (and ``scripts/wsi_train.py``) turn into exit status
:data:`~cohortseg.training.checkpoints.EXIT_INTERRUPTED` (75). Running the same command again
resumes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader
from tqdm import tqdm

from cohortseg.core.cohort import Subject
from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import copy_atomically, write_tsv
from cohortseg.networks.build import read_checkpoint, resolve_model
from cohortseg.preprocessing.patches import PatchDataset
from cohortseg.training import distributed
from cohortseg.training.batches import EpochBatchSampler, seed_everything
from cohortseg.training.checkpoints import (
    StopRequest,
    TrainingInterrupted,
    ignore_stop_signals,
    load_resumable,
    remove_partial_files,
    resume_key,
    rng_state,
    save_checkpoint,
    set_rng_state,
    weights_digest,
)
from cohortseg.training.tasks import TrainingTask, volume_task
from cohortseg.viz.figures import plot_learning_curve

log = logging.getLogger(__name__)


#: ``training.precision`` → the dtype of weights, activations and gradients.
PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


def fine_tuning_config(config: Mapping, parent: Mapping | None) -> dict:
    """The config sections a run trains with: as given, or, when it starts from a parent
    checkpoint (fine-tuning), the parent's network (``model_config``) and the epochs and
    learning rate of ``training.fine_tuning`` instead of ``training.epochs`` and
    ``training.learning_rate``."""
    if parent is None:
        return dict(config)
    training = {**config["training"], **config["training"]["fine_tuning"]}
    return {**config, "model": dict(parent["model_config"]), "training": training}


def check_parent_plan(parent: Mapping, plan: Mapping, path: str | Path) -> None:
    """A fine-tuned model keeps its parent's plan (so patches and inference stay comparable):
    raise :class:`CohortsegError` if ``plan`` is another one."""
    if parent["plan"].get("hash") != plan.get("hash"):
        raise CohortsegError(
            f"training.init_from: {path} was trained with plan {parent['plan'].get('hash')}, "
            f"but the patches were made with plan {plan.get('hash')}; fine-tuning keeps the "
            "parent's plan (the plan rule writes it when training.init_from is set)"
        )


def lr_at(epoch: int, epochs: int, base: float) -> float:
    """Polynomial (power 0.9) decay of the learning rate over the epochs, as in nnU-Net."""
    return base * (1 - epoch / max(epochs, 1)) ** 0.9


def scaled_learning_rate(learning_rate: float, lr_scaling: str, world_size: int) -> float:
    """The base learning rate for ``world_size`` ranks: ``linear`` multiplies it by the world
    size (the global batch grows with the ranks), ``none`` keeps it."""
    if lr_scaling == "linear":
        return learning_rate * world_size
    if lr_scaling == "none":
        return learning_rate
    raise CohortsegError(f"training.lr_scaling: {lr_scaling!r} is not none or linear")


def make_optimizer(
    params: Any, optimizer: str, learning_rate: float, weight_decay: float
) -> torch.optim.Optimizer:
    """``training.optimizer``: ``adamw``, or ``sgd`` with Nesterov momentum 0.99 (nnU-Net's)."""
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=learning_rate, momentum=0.99, nesterov=True, weight_decay=weight_decay
        )
    raise CohortsegError(f"training.optimizer: {optimizer!r} is not adamw or sgd")


def checkpoint_activations(net: torch.nn.Module) -> int:
    """Recompute the activations of the network's convolution blocks in the backward pass
    instead of keeping them (``torch.utils.checkpoint``), trading compute for memory in
    whole-volume training. The parameter names are unchanged, so checkpoints load into the
    plain network. Returns the number of blocks wrapped."""
    from monai.networks.blocks import Convolution, ResidualUnit
    from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetResBlock, UnetUpBlock

    kinds = (Convolution, ResidualUnit, UnetBasicBlock, UnetResBlock, UnetUpBlock)
    wrapped = 0

    def visit(module: torch.nn.Module) -> None:
        nonlocal wrapped
        for child in module.children():
            if isinstance(child, kinds):
                forward = child.forward

                def run(*args: Any, _forward: Any = forward, **kwargs: Any) -> Any:
                    if not torch.is_grad_enabled():
                        return _forward(*args, **kwargs)
                    return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

                child.forward = run
                wrapped += 1
            else:
                visit(child)

    visit(net)
    if wrapped == 0:
        log.warning("activation checkpointing: no known block in %s", type(net).__name__)
    return wrapped


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: torch.nn.Module,
    image: torch.Tensor,
    label: torch.Tensor,
) -> torch.Tensor:
    """One optimisation step on a batch already on the device: forward (bf16 autocast on
    CUDA), loss, backward (gradients averaged over ranks by the wrapped model or optimizer)
    and update; float64 batches (``training.precision``) run without autocast. Returns the
    detached loss."""
    device = image.device
    autocast = device.type == "cuda" and image.dtype == torch.float32
    optimizer.zero_grad()  # sets gradients to None (Horovod's optimizer takes no arguments)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = loss_fn(model(image), label)
    loss.backward()
    optimizer.step()
    return loss.detach()


def task_step(
    task: TrainingTask,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: torch.nn.Module,
    image: torch.Tensor,
    label: torch.Tensor,
    seeds: Sequence[int],
) -> torch.Tensor:
    """One step of ``task`` on a batch as the loader gives it: onto the device of ``model``'s
    weights in their dtype (``training.precision``), augmented with its samples' ``seeds``, one
    optimisation step (:func:`train_step`). Central training and a federated site's round both
    take it. Returns the detached loss."""
    weight = next(model.parameters())
    image, label = task.batch_on_device(image, label, weight.device, weight.dtype)
    image, label = task.augment(image, label, seeds)
    return train_step(model, optimizer, loss_fn, image, label)


@dataclass
class Progress:
    """Where training stands: completed epochs, steps into the next one, and the log so far."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    best: float = -math.inf

    def record_score(self, score: float) -> bool:
        """Keep ``score`` (an epoch's mean validation Dice) if it is the best so far; returns
        whether it was."""
        improved = not math.isnan(score) and score > self.best
        if improved:
            self.best = score
        return improved


@dataclass(frozen=True)
class RunFiles:
    """Where a run writes: its results in ``out``, ``last.pt`` and ``best.pt`` while training
    in ``checkpoints`` (``out`` unless a directory that Snakemake keeps between reruns)."""

    out: Path
    checkpoints: Path

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"


@dataclass
class Run:
    """One rank's training run: what is built once, and where training stands. The steps of
    :func:`fit` share it; every rank calls :meth:`write_checkpoint`, :meth:`stop_requested`
    and :meth:`interrupt` together (they are collectives)."""

    ctx: distributed.Distributed
    stop: StopRequest
    task: TrainingTask
    config: Mapping  # the model and training sections
    plan: Mapping
    files: RunFiles
    sampler: EpochBatchSampler
    loader: DataLoader
    net: torch.nn.Module  # the plain network: checkpoints, validation
    model: torch.nn.Module  # the network as the backend wraps it for training
    optimizer: torch.optim.Optimizer
    loss_fn: torch.nn.Module
    base_lr: float
    key: dict  # see cohortseg.training.checkpoints.resume_key
    progress: Progress = field(default_factory=Progress)

    @property
    def training(self) -> Mapping:
        return self.config["training"]

    @property
    def epochs(self) -> int:
        return int(self.training["epochs"])

    @property
    def steps(self) -> int:
        return self.sampler.steps

    @property
    def classes(self) -> list[str]:
        return list(self.plan["classes"])

    @property
    def columns(self) -> list[str]:
        dice = [f"val_dice_{c}" for c in self.classes]
        return ["epoch", "train_loss", "val_dice_mean", *dice, "learning_rate", "seconds"]

    def set_learning_rate(self, epoch: int) -> float:
        """Set the optimizer's learning rate for ``epoch`` (:func:`lr_at`) and return it."""
        lr = lr_at(epoch, self.epochs, self.base_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def mid_epoch_checkpoint_due(self) -> bool:
        """Whether the step just taken ends a ``training.checkpoint_every`` period inside the
        epoch (its end writes one anyway)."""
        every = int(self.training["checkpoint_every"] or 0)
        progress = self.progress
        return bool(every) and progress.global_step % every == 0 and progress.step < self.steps

    def write_checkpoint(self, lr: float, finished: bool = False) -> None:
        """Write ``last.pt`` (collective: every rank sends its random states and a digest of
        its weights; rank 0 writes)."""
        per_rank = self.ctx.gather(
            {"rng": rng_state(), "digest": weights_digest(self.net.state_dict())}
        )
        if not self.ctx.is_main:
            return
        path, progress = self.files.last, self.progress
        save_checkpoint(path, self._checkpoint_state(per_rank, lr, finished))
        if finished:
            log.info("checkpoint %s: finished (global step %d)", path, progress.global_step)
            return
        log.info(
            "checkpoint %s: epoch %d, step %d of %d (global step %d)",
            path,
            progress.epoch + 1,
            progress.step,
            self.steps,
            progress.global_step,
        )

    def _checkpoint_state(self, per_rank: Sequence[dict], lr: float, finished: bool) -> dict:
        progress = self.progress
        rows = progress.rows
        return {
            "model_state": self.net.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": None,  # bf16 autocast needs no gradient scaler
            "lr_schedule": {
                "kind": "poly",
                "power": 0.9,
                "base_lr": self.base_lr,
                "epochs": self.epochs,
            },
            "learning_rate": lr,
            "model_config": dict(self.config["model"]),
            **self.task.checkpoint_fields(),
            "parent_digest": self.key.get("parent"),
            "plan": dict(self.plan),
            "resume_key": self.key,
            "epoch": progress.epoch,
            "step": progress.step,
            "global_step": progress.global_step,
            "progress": vars(progress),
            "rng_states": [p["rng"] for p in per_rank],
            "rank_weight_digests": [p["digest"] for p in per_rank],
            "backend": self.ctx.backend,
            "world_size": self.ctx.world_size,
            "finished": finished,
            "val_dice_mean": rows[-1].get("val_dice_mean") if rows else None,
        }

    def stop_requested(self) -> bool:
        """Whether any rank was told to stop (collective)."""
        return self.ctx.allreduce_sum([self.stop.signal_name is not None])[0] > 0

    def interrupt(self, lr: float) -> TrainingInterrupted:
        """Write ``last.pt`` and wait for every rank (collective); the exception to raise."""
        self.write_checkpoint(lr)
        self.ctx.barrier()  # no rank exits (and makes a launcher end the others) before the write
        progress = self.progress
        exc = TrainingInterrupted(
            self.files.last, progress.epoch, progress.step, self.stop.signal_name or ""
        )
        if self.ctx.is_main:
            log.warning("%s", exc)
        return exc


def train(
    config: Mapping,
    plan: Mapping,
    stores: Sequence[str],
    val_subjects: Sequence[Subject],
    out_dir: str | Path,
    checkpoint_dir: str | Path | None = None,
    init_from: str | Path | None = None,
) -> dict:
    """Train a volume network: :func:`fit` with the volume task
    (:func:`cohortseg.training.tasks.volume_task`: ``training.augmentation``, validation on
    ``val_subjects``, preprocessed subjects with ``image`` and ``label`` on the plan's grid,
    segmented with the ``inference`` section's keys). Arguments and result as :func:`fit`'s."""
    augmentation = config["training"]["augmentation"]
    task = volume_task(augmentation, plan, config["inference"], val_subjects)
    return fit(task, config, plan, stores, out_dir, checkpoint_dir, init_from)


def fit(
    task: TrainingTask,
    config: Mapping,
    plan: Mapping,
    stores: Sequence[str],
    out_dir: str | Path,
    checkpoint_dir: str | Path | None = None,
    init_from: str | Path | None = None,
) -> dict:
    """Train ``task``'s network on the patch stores and write ``best.pt``, ``last.pt``,
    ``training_log.tsv`` and ``learning_curve.png`` into ``out_dir``.

    With ``init_from`` (a checkpoint), training fine-tunes that model: its network and weights,
    for ``training.fine_tuning``'s epochs at its learning rate; the patches must have been made
    with the parent's plan.

    Every rank of ``training.backend`` calls this; rank 0 validates and writes the files.
    ``last.pt`` is written to ``checkpoint_dir`` (default ``out_dir``) every
    ``training.checkpoint_every`` steps and at each epoch's end; if it exists there when
    training starts and was written for the same task, plan, model, training config, patch
    stores and number of ranks, training resumes from it. With a separate ``checkpoint_dir``
    (one that Snakemake does not delete before rerunning the job) the resume files are removed
    once training has finished and its results are in ``out_dir``.

    Parameters
    ----------
    task
        What the modality supplies: network shape, input, augmentation, loss, validation.
    config
        The ``model`` and ``training`` config sections, complete (as ``config.yaml`` and the
        schema make them).
    plan
        The plan the patch stores were made with (its ``hash`` and ``classes``).
    stores
        HDF5 patch stores.
    out_dir, checkpoint_dir
        Where the results go, and where ``last.pt`` is kept while training.
    init_from
        A checkpoint to start from (``best.pt`` of an earlier model), or ``None``: from scratch.

    Returns
    -------
    dict
        The final epoch's log row (rank 0's has the validation Dice).

    Raises
    ------
    TrainingInterrupted
        After SIGTERM or SIGUSR1, once the checkpoint is written.
    """
    parent = read_checkpoint(init_from) if init_from is not None else None
    if parent is not None:
        check_parent_plan(parent, plan, init_from)  # type: ignore[arg-type]
        log.info("fine-tuning %s (training.init_from)", init_from)
    config = fine_tuning_config(config, parent)
    config = {**config, "model": resolve_model(config["model"], plan)}
    training = config["training"]
    ctx = distributed.init(str(training["backend"]), str(training["device"]))
    out = Path(out_dir)
    files = RunFiles(out, Path(checkpoint_dir) if checkpoint_dir is not None else out)
    try:
        with StopRequest() as stop:
            run = _start_run(ctx, stop, task, config, plan, stores, files, parent)
            _resume(run)
            _log_start(run)
            run.model.train()
            for epoch in range(run.progress.epoch, run.epochs):
                started = time.perf_counter()
                lr = run.set_learning_rate(epoch)
                _train_epoch(run, epoch, lr)
                _end_epoch(run, epoch, lr, started)
            if ctx.is_main:
                _publish(files, run.progress.rows, run.classes, run.columns)
            ctx.barrier()
            return run.progress.rows[-1]
    finally:
        ctx.shutdown()


def _start_run(
    ctx: distributed.Distributed,
    stop: StopRequest,
    task: TrainingTask,
    config: Mapping,
    plan: Mapping,
    stores: Sequence[str],
    files: RunFiles,
    parent: Mapping | None = None,
) -> Run:
    """Seed this process, then build the loader, ``task``'s network (with the ``parent``
    checkpoint's weights, if any) and its optimizer."""
    training = config["training"]
    seed_everything(int(training["seed"]))
    dataset = PatchDataset(stores, plan_hash=plan["hash"])
    sampler, loader = _build_loader(dataset, training, ctx)
    initial = parent["model_state"] if parent is not None else None
    n_classes = len(plan["classes"]) + 1
    net, model, optimizer, base_lr = _build_model(task, config, n_classes, ctx, initial)
    key = {**resume_key(config, plan, dataset, ctx.world_size), "task": task.name}
    if initial is not None:  # a resumed fine-tuning run must have started from these weights
        key["parent"] = weights_digest(initial)
    return Run(
        ctx=ctx,
        stop=stop,
        task=task,
        config=config,
        plan=plan,
        files=files,
        sampler=sampler,
        loader=loader,
        net=net,
        model=model,
        optimizer=optimizer,
        loss_fn=task.loss(),
        base_lr=base_lr,
        key=key,
    )


def _build_loader(
    dataset: PatchDataset, training: Mapping, ctx: distributed.Distributed
) -> tuple[EpochBatchSampler, DataLoader]:
    """This rank's sampler and loader: ``training.steps_per_epoch`` steps (by default enough
    for every patch once) of ``training.batch_size`` patches."""
    batch_size = int(training["batch_size"])
    global_batch = batch_size * ctx.world_size
    steps = int(training["steps_per_epoch"] or math.ceil(len(dataset) / global_batch))
    seed = int(training["seed"])
    sampler = EpochBatchSampler(len(dataset), batch_size, steps, seed, ctx.rank, ctx.world_size)
    workers = int(training["num_workers"])
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=ctx.device.type == "cuda",
        worker_init_fn=ignore_stop_signals,
    )
    return sampler, loader


def _build_model(
    task: TrainingTask,
    config: Mapping,
    n_classes: int,
    ctx: distributed.Distributed,
    initial_state: Mapping | None = None,
) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer, float]:
    """``task``'s network on this rank's device in ``training.precision`` (with
    ``initial_state``'s weights, if given) and its optimizer (``training.optimizer``) at the
    base learning rate for the number of ranks, both wrapped by the backend.

    Returns
    -------
    tuple
        The plain network, the wrapped one, the wrapped optimizer and the base learning rate.
    """
    training = config["training"]
    dtype = PRECISIONS[str(training["precision"])]
    net = task.network(config["model"], n_classes, ctx.device, dtype)
    if initial_state is not None:
        net.load_state_dict(initial_state)
    if training["activation_checkpointing"]:
        checkpoint_activations(net)
    base_lr = scaled_learning_rate(
        float(training["learning_rate"]), training["lr_scaling"], ctx.world_size
    )
    optimizer = make_optimizer(
        net.parameters(), str(training["optimizer"]), base_lr, float(training["weight_decay"])
    )
    model, optimizer = ctx.wrap(net, optimizer)
    return net, model, optimizer, base_lr


def _resume(run: Run) -> None:
    """Continue from ``last.pt`` if it belongs to this run: rank 0's weights, optimizer state
    and progress, and each rank's own random state. Otherwise remove a ``best.pt`` that
    another run left, and start every rank from rank 0's weights."""
    ctx, files = run.ctx, run.files
    if ctx.is_main:  # temporary files of a run killed while writing
        remove_partial_files(files.checkpoints, ["last.pt", "best.pt"])
    resumed = ctx.broadcast_object(load_resumable(files.last, run.key) if ctx.is_main else None)
    if resumed is not None:
        run.net.load_state_dict(resumed["model_state"])
        run.optimizer.load_state_dict(resumed["optimizer_state"])
        run.progress = Progress(**resumed["progress"])
    elif ctx.is_main:  # files of another run must not pass for this one's
        for stale in (files.best, files.out / "best.pt"):
            stale.unlink(missing_ok=True)
    ctx.broadcast_state(run.net, run.optimizer)
    if resumed is None:
        return
    set_rng_state(resumed["rng_states"][ctx.rank])
    if ctx.is_main:
        log.info(
            "resumed from %s: epoch %d, step %d (global step %d)",
            files.last,
            run.progress.epoch + 1,
            run.progress.step,
            run.progress.global_step,
        )


def _log_start(run: Run) -> None:
    """Log (on rank 0) how long training is and how the batch is split among the ranks."""
    if run.ctx.is_main:
        log.info(
            "training: %d epochs of %d steps, batch %d per rank × %d ranks (%s), %d patches",
            run.epochs,
            run.steps,
            run.sampler.batch_size,
            run.ctx.world_size,
            run.ctx.backend,
            run.sampler.n_items,
        )


def _train_epoch(run: Run, epoch: int, lr: float) -> None:
    """Train the steps of ``epoch`` that remain, writing ``last.pt`` every
    ``training.checkpoint_every`` steps; after a step on which any rank was told to stop,
    write it and raise :class:`~cohortseg.training.checkpoints.TrainingInterrupted`."""
    progress = run.progress
    run.sampler.set_epoch(epoch, progress.step)
    batches = tqdm(
        run.loader,
        desc=f"epoch {epoch + 1}",
        initial=progress.step,
        total=run.steps,
        mininterval=30,
        disable=not run.ctx.is_main,
    )
    for step, (image, label) in enumerate(batches, start=progress.step):
        loss, stopping = _train_batch(run, epoch, step, image, label)
        progress.epoch_losses.append(loss)
        progress.step, progress.global_step = step + 1, progress.global_step + 1
        if stopping:
            raise run.interrupt(lr)
        if run.mid_epoch_checkpoint_due():
            run.write_checkpoint(lr)


def _train_batch(
    run: Run, epoch: int, step: int, image: torch.Tensor, label: torch.Tensor
) -> tuple[float, bool]:
    """One step on this rank's batch (:func:`task_step`: onto the device, augmented with its
    samples' seeds, one optimisation step). Returns the loss averaged over the ranks and
    whether any rank was told to stop."""
    ctx = run.ctx
    seeds = run.sampler.sample_seeds(epoch, step)
    loss = task_step(run.task, run.model, run.optimizer, run.loss_fn, image, label, seeds)
    # one collective for the mean loss and whether any rank was told to stop
    loss_sum, stopping = ctx.allreduce_sum([loss.item(), run.stop.signal_name is not None])
    return loss_sum / ctx.world_size, bool(stopping)


def _end_epoch(run: Run, epoch: int, lr: float, started: float) -> None:
    """Close ``epoch``: its log row, ``last.pt``, ``best.pt`` if the validation Dice improved,
    the training log so far; then, if any rank was told to stop and epochs remain, raise
    :class:`~cohortseg.training.checkpoints.TrainingInterrupted`."""
    progress, ctx, files = run.progress, run.ctx, run.files
    row = _epoch_row(run, epoch, lr, started)
    progress.rows.append(row)
    progress.epoch, progress.step, progress.epoch_losses = epoch + 1, 0, []
    if ctx.is_main:
        log.info(
            "epoch %d/%d: %s",
            epoch + 1,
            run.epochs,
            ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"),
        )
    improved = progress.record_score(row.get("val_dice_mean", -math.inf))
    run.write_checkpoint(lr, finished=epoch + 1 == run.epochs)
    if ctx.is_main:
        if improved:
            copy_atomically(files.last, files.best)
        write_tsv(files.out / "training_log.tsv", progress.rows, run.columns)
    if epoch + 1 < run.epochs and run.stop_requested():
        raise run.interrupt(lr)


def _epoch_row(run: Run, epoch: int, lr: float, started: float) -> dict:
    """The epoch's log row: mean training loss, learning rate, the validation Dice per class
    every ``training.val_every`` epochs and after the last (rank 0 validates while the others
    wait: :func:`_validate`), and the seconds since ``started``."""
    row: dict = {
        "epoch": epoch + 1,
        "train_loss": float(np.mean(run.progress.epoch_losses)),
        "learning_rate": lr,
    }
    if (epoch + 1) % int(run.training["val_every"]) == 0 or epoch + 1 == run.epochs:
        if run.ctx.is_main:
            dice = _validate(run)
            row["val_dice_mean"] = float(np.mean(dice))
            row.update({f"val_dice_{c}": d for c, d in zip(run.classes, dice, strict=True)})
        run.ctx.barrier()
    row["seconds"] = time.perf_counter() - started
    return row


def _validate(run: Run) -> list[float]:
    """The task's validation Dice per class of the plain network, in eval mode and without
    gradients; the network is back in training mode after."""
    run.net.eval()
    try:
        with torch.no_grad():
            return [float(d) for d in run.task.validate(run.net, run.ctx.device)]
    finally:
        run.net.train()


def _publish(
    files: RunFiles, rows: Sequence[dict], classes: Sequence[str], columns: list[str]
) -> None:
    """Put the final ``last.pt``, ``best.pt``, log and learning curve into ``files.out``;
    remove the resume files from a separate checkpoint directory."""
    out, last, best = files.out, files.last, files.best
    if not best.exists():  # no validation score was ever finite
        copy_atomically(last, best)
    if files.checkpoints.resolve() != out.resolve():
        copy_atomically(best, out / "best.pt")
        copy_atomically(last, out / "last.pt")
        best.unlink()
        last.unlink()
    write_tsv(out / "training_log.tsv", rows, columns)
    plot_learning_curve(rows, classes, out / "learning_curve.png")
