"""Cohort-scale inference: one model, many subjects, predictions mapped back to each subject's
native grid, with reading, segmenting and writing overlapped in a streaming pipeline."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from cohortseg.core import io
from cohortseg.core.errors import InvalidInputError
from cohortseg.core.geometry import undo_reorient
from cohortseg.core.io import load_nifti, save_nifti
from cohortseg.core.redact import redacting, scrub
from cohortseg.inference.predictor import predict_with_tta
from cohortseg.inference.uncertainty import (
    member_disagreement,
    predictive_entropy,
    structure_uncertainty,
    uncertainty_columns,
)
from cohortseg.networks.build import load_model
from cohortseg.networks.device import pick_device
from cohortseg.preprocessing.prepare import (
    CanonicalImage,
    Geometry,
    prepare_canonical,
    to_canonical,
)
from cohortseg.preprocessing.restore import restore_canonical_labels, restore_map

log = logging.getLogger(__name__)


@dataclass
class ShardItem:
    """One subject of a shard: where its image is and where its segmentation (and, if asked
    for, its voxel-wise uncertainty map) goes. ``uncertainty`` is filled in when the subject is
    segmented (:func:`cohortseg.inference.uncertainty.uncertainty_columns`)."""

    subject: str
    image: str
    output: str
    uncertainty_map: str | None = None
    uncertainty: dict[str, float] = field(default_factory=dict)


@dataclass
class Prediction:
    """What the device makes of one volume: (X, Y, Z) uint8 labels in RAS voxel order, the
    geometry, per-class uncertainty scores
    (:func:`cohortseg.inference.uncertainty.uncertainty_columns`) and, if asked for, the normalised
    entropy on the native grid (float32, native voxel order)."""

    labels: np.ndarray
    geometry: Geometry
    uncertainty: dict[str, float] = field(default_factory=dict)
    entropy_map: np.ndarray | None = None


@dataclass
class _Segmented:
    """A label map in RAS voxel order, waiting to be reoriented and written."""

    item: ShardItem
    prediction: Prediction


def read_volume(item: ShardItem, pin_memory: bool = False) -> CanonicalImage:
    """Read and decode a subject's image and reorient it to RAS voxel order (a reader's job).

    The voxels keep the file's data type (int16 for most MR and CT: half the host memory and
    the copy of float32), in native byte order, scaled where the header says so
    (:func:`cohortseg.core.io.load_nifti`); the device converts them. ``pin_memory`` puts the
    voxels in page-locked memory for an asynchronous copy to a GPU. Raises
    ``InvalidInputError`` if the file cannot be read or is refused.
    """
    data, affine = load_nifti(item.image, item.subject, dtype=None)
    try:
        image = to_canonical(data, affine)
    except Exception as exc:  # a degenerate affine, for one
        raise InvalidInputError(item.subject, item.image, f"cannot reorient: {exc}") from exc
    if pin_memory:
        image.data = torch.from_numpy(image.data).pin_memory()  # type: ignore[assignment]
    return image


def write_labels(segmented: _Segmented) -> None:
    """Reorient a label map to the native voxel order and write it, gzip-compressed and
    atomically, with the input's affine (a writer's job); likewise the uncertainty map, if
    there is one and the item names a file for it."""
    prediction, item = segmented.prediction, segmented.item
    affine = np.asarray(prediction.geometry.native_affine)
    labels = undo_reorient(prediction.labels, np.asarray(prediction.geometry.orientation))
    save_nifti(item.output, labels, affine, dtype=np.uint8)
    if item.uncertainty_map and prediction.entropy_map is not None:
        save_nifti(item.uncertainty_map, prediction.entropy_map, affine, dtype=np.float32)


def _uncertainty_scores(
    probs: torch.Tensor, members: Sequence[torch.Tensor], classes: Sequence[str]
) -> tuple[dict[str, float], torch.Tensor]:
    """Per-class scores of :func:`cohortseg.inference.uncertainty.uncertainty_columns` and the (X,
    Y, Z) entropy, on the preprocessed grid."""
    entropy = predictive_entropy(probs)
    labels = probs.argmax(dim=0)
    n = probs.shape[0]
    scores = dict(zip(classes, structure_uncertainty(entropy, labels, n), strict=True))
    disagreement = member_disagreement(members, labels, n) if members else [math.nan] * (n - 1)
    out = {f"uncertainty_{c}": v for c, v in scores.items()}
    out.update({f"tta_disagreement_{c}": v for c, v in zip(classes, disagreement, strict=True)})
    return out, entropy


def segment_canonical(
    net: torch.nn.Module,
    image: CanonicalImage,
    plan: Mapping,
    inference: Mapping,
    device: torch.device,
) -> Prediction:
    """The device's job for one volume: normalise, resample to the plan's spacing, segment by
    sliding window (with the test-time augmentation of ``inference.tta``), score its
    uncertainty per class and resample the class probabilities of the crop back to the
    canonical native grid before the argmax, all on ``device``; with
    ``inference.uncertainty_maps``, the entropy is resampled to the native grid too.
    """
    tensor, geometry = prepare_canonical(image, plan, device)
    probs, members = predict_with_tta(net, tensor, plan, inference)
    del tensor
    scores, entropy = _uncertainty_scores(probs, members, plan["classes"])
    del members
    labels = restore_canonical_labels(probs, geometry)
    entropy_map = restore_map(entropy, geometry) if inference["uncertainty_maps"] else None
    return Prediction(labels.cpu().numpy(), geometry, scores, entropy_map)


class _Progress:
    """Thread-safe count of finished subjects, logged with throughput and time left."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.start = time.perf_counter()
        self._lock = threading.Lock()

    def finished(self, item: ShardItem, error: InvalidInputError | None) -> None:
        with self._lock:
            self.done += 1
            self.failed += error is not None
            elapsed = time.perf_counter() - self.start
            rate = self.done / elapsed if elapsed > 0 else float("inf")
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            status = "FAILED (see above)" if error else f"-> {item.output}"
            log.info(
                "%s: %s [%d/%d, %d failed, %.3f volumes/s, about %s left]",
                item.subject,
                status,
                self.done,
                self.total,
                self.failed,
                rate,
                _duration(left),
            )


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


@contextmanager
def _pool(workers: int, name: str) -> Iterator[ThreadPoolExecutor]:
    """A thread pool whose queued (not yet started) jobs are dropped if the block fails."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"cohortseg-{name}")
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def segment_items(
    net: torch.nn.Module,
    plan: Mapping,
    items: Sequence[ShardItem],
    inference: Mapping,
    device: torch.device,
) -> list[InvalidInputError]:
    """Segment subjects with a loaded network as a streaming pipeline.

    ``inference.num_workers`` reader threads decode images ahead of the device, at most
    ``inference.queue_size`` volumes ahead of the one being segmented; the device segments one
    volume at a time in item order (:func:`segment_canonical`), so results depend neither on
    the number of workers nor on how subjects are sharded; ``num_workers`` writer threads
    encode and write the label maps, at most ``queue_size`` waiting. Host memory is therefore
    bounded by about ``queue_size + num_workers + 1`` images in their file's dtype (those read
    ahead, those being read, the one on the device) and ``2 * queue_size`` uint8 label maps.
    Gzip (ISA-L) and NumPy's copies release the GIL, so threads suffice.

    A subject that cannot be read, segmented or written is logged and reported; the others are
    still segmented. Returns the per-subject errors in item order (empty when all succeeded).
    """
    num_workers = max(1, int(inference["num_workers"]))
    queue_size = max(1, int(inference["queue_size"]))
    pin = device.type == "cuda"
    progress = _Progress(len(items))
    failures: dict[int, InvalidInputError] = {}
    lock = threading.Lock()

    def fail(index: int, error: InvalidInputError) -> None:
        with lock:
            failures[index] = error
        progress.finished(items[index], error)

    def write(index: int, segmented: _Segmented) -> None:
        segmented.item.uncertainty = segmented.prediction.uncertainty
        try:
            write_labels(segmented)
        except Exception as exc:
            log.exception("%s: cannot write %s", segmented.item.subject, segmented.item.output)
            item = segmented.item
            fail(index, InvalidInputError(item.subject, item.output, f"cannot write: {exc}"))
        else:
            progress.finished(segmented.item, None)

    log.info(
        "segmenting %d subject(s) on %s: num_workers %d, queue_size %d",
        len(items),
        _device_name(device),
        num_workers,
        queue_size,
    )
    device_s = read_wait_s = write_wait_s = 0.0
    with _pool(num_workers, "read") as readers, _pool(num_workers, "write") as writers:
        reads: deque[tuple[int, Future[CanonicalImage]]] = deque()
        writes: deque[Future[None]] = deque()
        upcoming = iter(range(len(items)))

        def read_ahead() -> None:
            # the readers run at most queue_size volumes ahead of the device
            while len(reads) < queue_size and (index := next(upcoming, None)) is not None:
                reads.append((index, readers.submit(read_volume, items[index], pin)))

        read_ahead()
        while reads:
            index, future = reads.popleft()
            read_ahead()
            item = items[index]
            tick = time.perf_counter()
            try:
                image = future.result()
            except InvalidInputError as exc:
                log.error("%s", exc)
                fail(index, exc)
                continue
            except Exception as exc:
                problem = scrub(f"cannot read: {exc}", item.image, "image")
                _log_failure(item.subject, problem)
                fail(index, InvalidInputError(item.subject, item.image, problem))
                continue
            finally:
                read_wait_s += time.perf_counter() - tick
            tick = time.perf_counter()
            try:
                prediction = segment_canonical(net, image, plan, inference, device)
            except Exception as exc:
                problem = scrub(f"segmentation failed: {type(exc).__name__}: {exc}", item.image)
                _log_failure(item.subject, problem)
                fail(index, InvalidInputError(item.subject, item.image, problem))
                continue
            finally:
                del image
                device_s += time.perf_counter() - tick
            tick = time.perf_counter()
            while len(writes) >= queue_size:
                writes.popleft().result()
            write_wait_s += time.perf_counter() - tick
            writes.append(writers.submit(write, index, _Segmented(item, prediction)))
            del prediction
        tick = time.perf_counter()
        for pending in writes:
            pending.result()
        write_wait_s += time.perf_counter() - tick
    elapsed = time.perf_counter() - progress.start
    log.info(
        "segmented %d subject(s) in %.1f s (%.3f volumes/s, %d failed): device %.1f s, "
        "waiting for readers %.1f s, waiting for writers %.1f s",
        len(items),
        elapsed,
        len(items) / elapsed if elapsed > 0 else 0.0,
        len(failures),
        device_s,
        read_wait_s,
        write_wait_s,
    )
    return [failures[i] for i in sorted(failures)]


def _log_failure(subject: str, problem: str) -> None:
    """Log a subject's failure, with the traceback unless input paths are redacted (a
    traceback can quote them)."""
    if redacting():
        log.error("%s: %s", subject, problem)
    else:
        log.exception("%s: %s", subject, problem)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({torch.get_num_threads()} threads)"


def segment_shard(
    checkpoint: str, items: Sequence[ShardItem], inference: Mapping
) -> list[InvalidInputError]:
    """Segment every subject of a shard with one model load (see :func:`segment_items`).

    A subject whose input cannot be read (or segmented, or written) is reported and skipped;
    the others are still segmented. Returns the per-subject errors (empty when all succeeded).
    """
    device = pick_device(inference["device"])
    net, plan = load_model(checkpoint, device)
    return segment_items(net, plan, items, inference, device)


def cpu_compute_threads(environ: Mapping[str, str]) -> int:
    """torch's intra-op threads for inference on the CPU: the job's threads (Snakemake's
    ``OMP_NUM_THREADS``, else every core) less one, which the reader and writer threads and the
    scheduler keep. Idle OpenMP threads spin-wait, so a pool as large as the cores slows down
    several-fold whenever anything else takes a core (measured on 2 cores: 128 small volumes
    in 1.6 s alone, 5.8 s beside one busy process; one thread, 1.8 s either way)."""
    threads = int(environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    return max(1, threads - 1)


def write_shard_manifest(path: str, items: Sequence[ShardItem], model_sha256: str = "") -> None:
    """Write the shard's manifest: one row per subject with its segmentation, the SHA-256 of
    the model that made it (``model_sha256``) and the file's SHA-256, so that a finished shard
    can be checked and compared (it is also what evaluation depends on, standing for the
    shard's segmentations)."""
    rows = [
        {"subject": i.subject, "segmentation": i.output, "model_sha256": model_sha256}
        for i in items
    ]
    io.write_manifest(path, rows, ["subject", "segmentation", "model_sha256"], "segmentation")


def write_uncertainty_table(path: str, items: Sequence[ShardItem], classes: Sequence[str]) -> None:
    """Write the shard's uncertainty table: one row per subject with its scores
    (:func:`cohortseg.inference.uncertainty.uncertainty_columns`) and, when the items have maps, the
    map and its SHA-256."""
    columns = ["subject", *uncertainty_columns(classes)]
    rows = [
        {"subject": i.subject, **i.uncertainty, "uncertainty_map": i.uncertainty_map} for i in items
    ]
    if items and all(i.uncertainty_map for i in items):
        io.write_manifest(path, rows, [*columns, "uncertainty_map"], "uncertainty_map")
    else:
        io.write_tsv(path, rows, columns)
