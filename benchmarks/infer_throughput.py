"""Inference throughput: the stock MONAI per-volume recipe against cohortseg's streaming shard
pipeline, on the same volumes, with the same weights, ROI and overlap.

Synthesises ``--n`` demo phantoms (int16 gzip NIfTI, anisotropic spacing, oblique affines with
permuted and flipped axes; 160×384×384 voxels by default, the size of a knee MRI), derives a
plan from them as the workflow would (or takes the plan and weights of ``--checkpoint``), and
builds the network of config.yaml's ``model`` section with random weights (or trains it for
``--train-steps`` steps on the phantoms). Then, in one process:

(a) ``monai``: one volume at a time, LoadImaged → EnsureChannelFirstd → Orientationd(RAS) →
    Spacingd(plan spacing) → CropForegroundd (the plan's body crop, so that the z-score is over
    what the network was trained on; ``--monai-without-crop`` leaves it out) →
    NormalizeIntensityd → sliding_window_inference (Gaussian) → softmax → Invertd (to the native
    grid, on the CPU) → argmax → SaveImaged (uint8);
(b) ``cohortseg``: :func:`cohortseg.inference.shard.segment_items` over the same files
    (``inference.num_workers`` = ``--workers``, ``inference.queue_size`` = ``--queue-size``).

Both use bf16 autocast for the network on CUDA and fp32 on the CPU. With ``--repeats R`` the
two alternate R times and each one's fastest run gives its figures (the median and range of
the ratios of back-to-back runs show the noise). Printed, one ``name: value unit`` per line,
for each: volumes/s, wall and CPU seconds per volume, GPU busy share (the network's CUDA-event
time over the wall time; CUDA only), peak host RSS of the process and its children (sampled
every 20 ms), peak GPU memory, and the hours 50,000 volumes of this size would take on 1 and 8
devices (one shard job per device); then the speed-up (b)/(a), the agreement of their label
maps (Dice per volume, averaged over the classes either has; mean and minimum over volumes)
and each one's Dice against the phantoms' true labels.

    python benchmarks/infer_throughput.py                                # on the GPU if any
    python benchmarks/infer_throughput.py --n 8 --shape 64 96 96 --device cpu --repeats 3
    python benchmarks/infer_throughput.py --checkpoint results/model/best.pt
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import torch
import yaml
from skimage.filters import threshold_otsu

from cohortseg.core.cohort import Subject
from cohortseg.core.io import load_nifti, save_nifti
from cohortseg.inference.predictor import predict_probabilities
from cohortseg.inference.shard import ShardItem, segment_items
from cohortseg.inputs.demo import demo_phantom
from cohortseg.networks.build import build_network, load_model
from cohortseg.networks.device import pick_device
from cohortseg.preprocessing.plan import fingerprint, make_plan
from cohortseg.preprocessing.prepare import prepare_image, prepare_label

REPO = Path(__file__).resolve().parents[1]
WIDE = {"name": "UNet", "channels": [32, 64, 128, 256, 320], "strides": [2, 2, 2, 2]}
COHORT_SIZE = 50_000


@dataclass
class Phase:
    """Figures of one pipeline run over all volumes."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mib: float = 0.0
    peak_gpu_mib: float | None = None
    network_s: float | None = None


class TimedNetwork(torch.nn.Module):
    """The network, with the time of each forward call measured by CUDA events."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda:
            return self.net(x)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = self.net(x)
        end.record()
        self.events.append((start, end))
        return out

    def seconds(self) -> float:
        """Network time since the last call, seconds."""
        torch.cuda.synchronize()
        total = sum(s.elapsed_time(e) for s, e in self.events) / 1000
        self.events.clear()
        return total


@dataclass
class RssSampler:
    """Peak resident memory of this process and its children, sampled in a thread."""

    interval_s: float = 0.02
    peak_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            rss = me.memory_info().rss
            for child in me.children(recursive=True):
                try:
                    rss += child.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_bytes = max(self.peak_bytes, rss)
            self._stop.wait(self.interval_s)

    @contextmanager
    def running(self):
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def measure(run: Callable[[], None], net: TimedNetwork, device: torch.device) -> Phase:
    """Run one pipeline and measure it."""
    phase = Phase()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        net.seconds()
    with RssSampler().running() as rss:
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        phase.wall_s = time.perf_counter() - wall
        phase.cpu_s = time.process_time() - cpu
    phase.peak_rss_mib = rss.peak_bytes / 2**20
    if device.type == "cuda":
        phase.peak_gpu_mib = torch.cuda.max_memory_allocated(device) / 2**20
        phase.network_s = net.seconds()
    return phase


def fastest(best: Phase | None, phase: Phase) -> Phase:
    """The faster of two runs, with the larger of their memory peaks."""
    if best is None:
        return phase
    peak_gpu = [m for m in (best.peak_gpu_mib, phase.peak_gpu_mib) if m is not None]
    out = best if best.wall_s <= phase.wall_s else phase
    return Phase(
        wall_s=out.wall_s,
        cpu_s=out.cpu_s,
        peak_rss_mib=max(best.peak_rss_mib, phase.peak_rss_mib),
        peak_gpu_mib=max(peak_gpu) if peak_gpu else None,
        network_s=out.network_s,
    )


def synthesise(root: Path, n: int, shape: Sequence[int], spacing_mm: Sequence[float]) -> list:
    """Write ``n`` demo phantoms (image and label) under ``root``; returns Subjects."""
    subjects = []
    for k in range(n):
        image, label, affine = demo_phantom(shape, spacing_mm, seed=1000 + k)
        sid = f"bench-{k:04d}"
        subject = Subject(
            sid, str(root / f"{sid}.nii.gz"), str(root / f"{sid}_label.nii.gz"), "test"
        )
        save_nifti(subject.image, image, affine)
        save_nifti(subject.label, label, affine)
        subjects.append(subject)
    return subjects


def quick_train(
    net: torch.nn.Module, subjects: Sequence[Subject], plan: dict, steps: int, device: torch.device
) -> None:
    """Train ``net`` for ``steps`` steps on random patches of the phantoms (Dice + CE)."""
    from monai.losses import DiceCELoss

    grids = []
    for s in subjects:
        data, affine = load_nifti(s.image, s.subject)
        label, _ = load_nifti(s.label, s.subject, dtype=np.uint8)
        image, geometry = prepare_image(data, affine, plan, device)
        grids.append((image, prepare_label(label, geometry, device).long()))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=3e-5)
    rng = np.random.default_rng(0)
    size = plan["patch_size"]
    net.train()
    for _ in range(steps):
        images, labels = [], []
        for _ in range(2):
            image, label = grids[rng.integers(len(grids))]
            pad = [max(0, p - n) for p, n in zip(size, image.shape[1:], strict=True)]
            if any(pad):
                spec = [x for p in reversed(pad) for x in (0, p)]
                image = torch.nn.functional.pad(image, spec)
                label = torch.nn.functional.pad(label, spec)
            start = [rng.integers(0, n - p + 1) for n, p in zip(image.shape[1:], size, strict=True)]
            sl = (slice(None), *(slice(a, a + p) for a, p in zip(start, size, strict=True)))
            images.append(image[sl])
            labels.append(label[sl])
        batch = torch.stack(images)
        # intensity augmentation: robust to how the recipes normalise (whole volume or crop)
        scale = torch.empty(len(images), 1, 1, 1, 1, device=device).uniform_(0.7, 1.3)
        shift = torch.empty(len(images), 1, 1, 1, 1, device=device).uniform_(-0.4, 0.4)
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(net(batch * scale + shift), torch.stack(labels))
        loss.backward()
        optimizer.step()
    net.eval()


def monai_recipe(
    net: torch.nn.Module,
    files: Sequence[str],
    out_dir: Path,
    plan: dict,
    overlap: float,
    sw_batch_size: int,
    device: torch.device,
    crop: bool = True,
) -> None:
    """The stock MONAI per-volume recipe, one volume at a time (with the plan's body crop
    before the normalisation if ``crop``)."""
    from monai.inferers import sliding_window_inference
    from monai.transforms import (
        AsDiscreted,
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        SaveImaged,
        Spacingd,
    )

    steps = [
        LoadImaged("image"),
        EnsureChannelFirstd("image"),
        Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd("image", pixdim=plan["target_spacing_mm"], mode="bilinear"),
    ]
    if crop and plan.get("crop", True):
        # the plan's body crop (Otsu threshold on every second voxel, margin), so that the
        # z-score is over what the network was trained on
        def body(image: torch.Tensor) -> torch.Tensor:
            values = np.asarray(image[0, ::2, ::2, ::2], dtype=np.float32)
            return image > threshold_otsu(values)

        margin = int(plan.get("crop_margin", 4))
        steps.append(CropForegroundd("image", "image", select_fn=body, margin=margin))
    pre = Compose([*steps, NormalizeIntensityd("image")])
    post = Compose(
        [
            Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False, device="cpu"),
            AsDiscreted("pred", argmax=True),
            SaveImaged(
                "pred",
                output_dir=str(out_dir),
                output_postfix="seg",
                output_dtype=np.uint8,
                separate_folder=False,
                resample=False,
                print_log=False,
            ),
        ]
    )
    for path in files:
        data = pre({"image": path})
        image = data["image"].to(device)
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
        ):
            logits = sliding_window_inference(
                image[None],
                plan["patch_size"],
                sw_batch_size,
                net,
                overlap=overlap,
                mode="gaussian",
            )
        data["pred"] = torch.softmax(logits[0].float(), dim=0).cpu()
        post(data)


def mean_dice(a: np.ndarray, b: np.ndarray, n_classes: int) -> float:
    """Mean Dice over the foreground classes present in ``a`` or ``b`` (1.0 if none)."""
    scores = []
    for c in range(1, n_classes):
        x, y = a == c, b == c
        total = int(x.sum() + y.sum())
        if total:
            scores.append(2 * float((x & y).sum()) / total)
    return float(np.mean(scores)) if scores else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=8, help="number of volumes")
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 384, 384], help="voxels")
    parser.add_argument("--spacing-mm", type=float, nargs=3, default=[0.7, 0.36, 0.36])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--workers", type=int, default=None, help="inference.num_workers")
    parser.add_argument("--queue-size", type=int, default=None, help="inference.queue_size")
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    parser.add_argument("--checkpoint", default=None, help="weights and plan to use")
    parser.add_argument("--train-steps", type=int, default=0, help="quick training steps")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each pipeline (alternating); the fastest counts",
    )
    parser.add_argument("--seed", type=int, default=0, help="random weights' seed")
    parser.add_argument(
        "--monai-without-crop",
        action="store_true",
        help="(a) without CropForegroundd: z-scores the whole field of view, unlike training",
    )
    parser.add_argument("--save-checkpoint", default=None, help="write the weights and plan here")
    parser.add_argument("--tmpdir", default=None, help="where the volumes are written")
    parser.add_argument(
        "--network",
        choices=["default", "wide"],
        default="default",
        help="default: config.yaml's model; wide: UNet with channels 32, 64, 128, 256, 320",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    config = yaml.safe_load(Path(args.config).read_text())
    if args.network == "wide":
        config["model"] = {**config["model"], **WIDE}
    inference = dict(config["inference"])
    inference["device"] = args.device
    if args.workers is not None:
        inference["num_workers"] = args.workers
    if args.queue_size is not None:
        inference["queue_size"] = args.queue_size
    device = pick_device(args.device)
    overlap, sw_batch_size = float(inference["overlap"]), int(inference["sw_batch_size"])

    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        root = Path(tmp)
        subjects = synthesise(root / "images", args.n, args.shape, args.spacing_mm)
        if args.checkpoint:
            net, plan = load_model(args.checkpoint, device)
        else:
            plan = make_plan(fingerprint(subjects), config)
            torch.manual_seed(args.seed)
            net = build_network(config["model"], len(plan["classes"]) + 1).to(device).eval()
            if args.train_steps:
                tick = time.perf_counter()
                quick_train(net, subjects, plan, args.train_steps, device)
                print(f"train_wall: {time.perf_counter() - tick:.1f} s")
        if args.save_checkpoint:
            torch.save(
                {"model_state": net.state_dict(), "model_config": config["model"], "plan": plan},
                args.save_checkpoint,
            )
        n_classes = len(plan["classes"]) + 1
        timed = TimedNetwork(net).eval()
        # warm-up: kernels are chosen and cached on the first call of a shape
        with torch.no_grad():
            predict_probabilities(
                timed,
                torch.zeros((1, *plan["patch_size"]), device=device),
                plan,
                {"overlap": overlap, "sw_batch_size": sw_batch_size},
            )

        network_only_s = network_alone(timed, subjects[0], plan, inference, device)
        files = [s.image for s in subjects]
        monai_dir, ours_dir = root / "monai", root / "cohortseg"
        items = [
            ShardItem(s.subject, s.image, str(ours_dir / f"{s.subject}.nii.gz")) for s in subjects
        ]
        failures: list = []

        def run_monai() -> None:
            crop = not args.monai_without_crop
            monai_recipe(timed, files, monai_dir, plan, overlap, sw_batch_size, device, crop)

        def run_cohortseg() -> None:
            failures.extend(segment_items(timed, plan, items, inference, device))

        # alternate the two and keep each one's fastest run (on a shared machine the load
        # drifts); the spread of the ratios of back-to-back runs shows how much
        a = b = None
        ratios = []
        for _ in range(args.repeats):
            a_run, b_run = measure(run_monai, timed, device), measure(run_cohortseg, timed, device)
            ratios.append(a_run.wall_s / b_run.wall_s)
            a, b = fastest(a, a_run), fastest(b, b_run)
        if failures:
            raise SystemExit(f"cohortseg failed on {len(failures)} volume(s): {failures}")

        dice, truth_a, truth_b, geometry_ok = [], [], [], True
        for s in subjects:
            src = nib.load(s.image)
            ref = nib.load(monai_dir / f"{Path(s.image).name.removesuffix('.nii.gz')}_seg.nii.gz")
            ours = nib.load(ours_dir / f"{s.subject}.nii.gz")
            geometry_ok &= ours.shape == src.shape and np.allclose(
                ours.affine, src.affine, atol=1e-4
            )
            a_labels, b_labels = np.asarray(ref.dataobj), np.asarray(ours.dataobj)
            truth = np.asarray(nib.load(s.label).dataobj)
            dice.append(mean_dice(a_labels, b_labels, n_classes))
            truth_a.append(mean_dice(a_labels, truth, n_classes))
            truth_b.append(mean_dice(b_labels, truth, n_classes))

    n = args.n
    print(f"volumes: {n} count")
    print(f"shape: {'x'.join(map(str, args.shape))} voxels")
    print(f"device: {_device_name(device)}")
    print(f"target_spacing: {'x'.join(f'{v:g}' for v in plan['target_spacing_mm'])} mm")
    print(f"patch_size: {'x'.join(map(str, plan['patch_size']))} voxels")
    print(f"overlap: {overlap:g} fraction")
    print(f"sw_batch_size: {sw_batch_size} windows")
    print(f"num_workers: {inference.get('num_workers')} threads")
    print(f"queue_size: {inference.get('queue_size')} volumes")
    for name, phase in (("monai", a), ("cohortseg", b)):
        rate = n / phase.wall_s
        print(f"{name}_volumes_per_s: {rate:.4g} volumes/s")
        print(f"{name}_seconds_per_volume: {phase.wall_s / n:.4g} s")
        print(f"{name}_cpu_seconds_per_volume: {phase.cpu_s / n:.4g} s")
        busy = f"{phase.network_s / phase.wall_s:.3f}" if phase.network_s is not None else "n/a"
        print(f"{name}_gpu_busy_share: {busy} fraction")
        print(f"{name}_peak_host_rss: {phase.peak_rss_mib:.0f} MiB")
        gpu = f"{phase.peak_gpu_mib:.0f}" if phase.peak_gpu_mib is not None else "n/a"
        print(f"{name}_peak_gpu_memory: {gpu} MiB")
        for devices in (1, 8):
            hours = COHORT_SIZE / rate / devices / 3600
            print(f"{name}_projected_{COHORT_SIZE}_volumes_{devices}_devices: {hours:.1f} h")
    print(f"network_only_volumes_per_s: {1 / network_only_s:.4g} volumes/s")
    print(f"cohortseg_share_of_network_limit: {n / b.wall_s * network_only_s:.3f} fraction")
    print(f"speedup_cohortseg_over_monai: {a.wall_s / b.wall_s:.3f} x")
    print(f"speedup_back_to_back_median: {np.median(ratios):.3f} x")
    print(f"speedup_back_to_back_range: {min(ratios):.3f}-{max(ratios):.3f} x")
    print(f"cpu_time_ratio_monai_over_cohortseg: {a.cpu_s / b.cpu_s:.3f} x")
    print(f"agreement_mean_dice: {np.mean(dice):.4f} dice")
    print(f"agreement_min_dice: {np.min(dice):.4f} dice")
    print(f"monai_dice_vs_phantom_truth: {np.mean(truth_a):.4f} dice")
    print(f"cohortseg_dice_vs_phantom_truth: {np.mean(truth_b):.4f} dice")
    print(f"cohortseg_native_geometry: {'yes' if geometry_ok else 'no'} bool")


@torch.no_grad()
def network_alone(
    net: torch.nn.Module, subject, plan: dict, inference: dict, device: torch.device, runs: int = 3
) -> float:
    """Seconds per volume of the sliding-window network alone, on a preprocessed volume already
    on the device (the physical limit of this network on this device; the fastest of
    ``runs``)."""
    data, affine = load_nifti(subject.image, subject.subject, dtype=None)
    tensor, _ = prepare_image(data, affine, plan, device)
    best = float("inf")
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tick = time.perf_counter()
        predict_probabilities(net, tensor, plan, inference)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - tick)
    return best


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "_")
    return f"cpu_{torch.get_num_threads()}_threads"


if __name__ == "__main__":
    main()
