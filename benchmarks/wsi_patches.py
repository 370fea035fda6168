"""Whole-slide figures on a synthetic slide written tile by tile (never whole in memory):
patch extraction rate into the HDF5 store, random-access read time per patch from it, and
the peak memory of segmenting the whole slide.

Prints one ``name: value unit`` line per figure. The default slide is 40,000 × 40,000 pixels
at 0.25 µm (a 40× scan, 1 cm²), patches 256 × 256 at level 0, segmentation at 1 µm per pixel
(a 10,000 × 10,000 label map) with an untrained 2D U-Net (memory and time do not depend on
the weights). Each measured step runs in its own process, so its peak RSS is its own.

    python benchmarks/wsi_patches.py [--size 40000] [--workdir /tmp/wsi_bench]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write_slide(workdir: Path, size: int, pixel_size_um: float) -> tuple[Path, Path]:
    """The synthetic slide (JPEG tiles) and its GeoJSON tumour annotations."""
    from cohortseg.wsi.demo import synthetic_slide, write_synthetic_slide

    slide, annotations = workdir / "slide.tif", workdir / "slide.geojson"
    if not slide.exists():
        start = time.perf_counter()
        write_synthetic_slide(
            slide, synthetic_slide(size, size, seed=1), pixel_size_um, geojson_path=annotations
        )
        print(f"slide_write_time: {time.perf_counter() - start:.1f} s")
    print(f"slide_size: {size} px")
    print(f"slide_file_size: {slide.stat().st_size / 2**20:.0f} MiB")
    return slide, annotations


def extract(
    slide_path: str, geojson: str, store: str, n_patches: int, patch: int, compression: str
) -> None:
    """Tissue detection, then ``n_patches`` level-0 patches into an HDF5 store."""
    from cohortseg.wsi.labels import open_labels
    from cohortseg.wsi.patches import sample_slide_origins, write_slide_store
    from cohortseg.wsi.slides import open_slide
    from cohortseg.wsi.tissue import detect_tissue

    slide = open_slide("bench", slide_path)
    start = time.perf_counter()
    tissue, level = detect_tissue(slide, 2048)
    print(f"tissue_detection_time: {time.perf_counter() - start:.2f} s")
    labels = open_labels(slide, geojson, ["tumour"])
    low = labels.region(slide.downsamples[level], 0, 0, *tissue.shape)
    w, h = slide.dimensions[0]
    origins = sample_slide_origins(
        tissue,
        low,
        slide.downsamples[level],
        (h, w),
        (patch, patch),
        n_patches,
        0.67,
        np.random.default_rng(0),
    )
    start, cpu = time.perf_counter(), time.process_time()
    write_slide_store(store, slide, 0, labels, origins, (patch, patch), compression, 4, "bench")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"patch_extraction_rate_{compression}: {n_patches / seconds:.0f} patches/s")
    # CPU seconds: what the rate would be on an idle core (this machine's are shared)
    print(f"patch_extraction_rate_cpu_{compression}: {n_patches / cpu:.0f} patches/cpu-s")


def random_reads(store: str, n_reads: int, compression: str) -> None:
    """Random-access reads of single patches (image and label) from the store."""
    from cohortseg.preprocessing.patches import PatchDataset

    dataset = PatchDataset([store], "bench")
    rows = np.random.default_rng(1).integers(0, len(dataset), n_reads)
    dataset[0]  # open the file
    start, cpu = time.perf_counter(), time.process_time()
    for row in rows:
        dataset[int(row)]
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    ms = 1000 * seconds / n_reads
    print(f"patch_read_time_{compression}: {ms:.3f} ms per patch (image + label)")
    print(f"patch_read_cpu_time_{compression}: {1000 * cpu / n_reads:.3f} cpu-ms per patch")
    import h5py

    with h5py.File(store, "r") as h5:
        images = h5["image"]
        images[0]
        start, cpu = time.perf_counter(), time.process_time()
        for row in rows:
            images[int(row)]
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"image_read_time_{compression}: {1000 * seconds / n_reads:.3f} ms per 256x256 RGB patch")
    print(f"image_read_cpu_time_{compression}: {1000 * cpu / n_reads:.3f} cpu-ms per patch")
    print(f"store_size_{compression}: {Path(store).stat().st_size / 2**20:.1f} MiB")


def segment(slide_path: str, out_dir: str, target_um: float, window: int, memory_mb: float) -> None:
    """The whole slide segmented on its tissue, label pyramid and overview written."""
    import torch

    from cohortseg.networks.build import build_network
    from cohortseg.wsi.inference import overview, segment_slide, write_label_pyramid
    from cohortseg.wsi.slides import choose_level, open_slide
    from cohortseg.wsi.tissue import detect_tissue
    from cohortseg.wsi.training import slide_predictor

    torch.manual_seed(0)
    model = {
        "name": "UNet",
        "channels": [16, 32, 64],
        "strides": [2, 2],
        "num_res_units": 1,
        "kwargs": {},
    }
    net = build_network(model, 2, spatial_dims=2, in_channels=3).eval()
    slide = open_slide("bench", slide_path)
    tissue, tissue_level = detect_tissue(slide, 2048)
    level = choose_level(slide, target_um)
    w, h = slide.dimensions[level]
    print(f"segmentation_level: {level} ({w} x {h} px, {slide.level_pixel_size_um(level):g} um/px)")
    start, cpu = time.perf_counter(), time.process_time()
    scratch = Path(out_dir) / "scratch.h5"
    with torch.inference_mode():
        segment_slide(
            slide,
            level,
            slide_predictor(net, torch.device("cpu")),
            1,
            tissue,
            tissue_level,
            scratch,
            window=window,
            overlap=0.25,
            batch_size=4,
            max_memory_mb=memory_mb,
        )
    print(f"segmentation_time: {time.perf_counter() - start:.1f} s")
    print(f"segmentation_cpu_time: {time.process_time() - cpu:.1f} cpu-s")
    start = time.perf_counter()
    write_label_pyramid(scratch, Path(out_dir) / "labels.tif", slide.level_pixel_size_um(level))
    overview(slide, level, scratch, Path(out_dir) / "overview.png")
    print(f"label_pyramid_and_overview_time: {time.perf_counter() - start:.1f} s")


def in_child(step: str, *args: str) -> None:
    """Run a step of this script in a fresh process and print its peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, __file__, "--step", step, *args], check=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak > before:  # ru_maxrss of children is the largest child so far (KiB on Linux)
        print(f"{step}_peak_rss: {peak / 1024:.0f} MiB")
    else:
        print(f"{step}_peak_rss: <= {before / 1024:.0f} MiB")


def load_average() -> None:
    """The machine's 1-minute load average (other work shares its cores)."""
    import os

    print(f"load_average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=40000, help="slide side, level-0 pixels")
    parser.add_argument("--pixel-size-um", type=float, default=0.25)
    parser.add_argument("--workdir", default="/tmp/cohortseg_wsi_bench")
    parser.add_argument("--patches", type=int, default=500)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--target-um", type=float, default=1.0, help="segmentation level")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--max-memory-mb", type=float, default=256)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "extract":
        extract(*args.rest[:3], args.patches, args.patch, args.rest[3])
        return
    if args.step == "reads":
        random_reads(args.rest[0], args.reads, args.rest[1])
        return
    if args.step == "segment":
        segment(args.rest[0], args.rest[1], args.target_um, args.window, args.max_memory_mb)
        return
    load_average()
    workdir = Path(args.workdir) / str(args.size)
    workdir.mkdir(parents=True, exist_ok=True)
    slide, annotations = write_slide(workdir, args.size, args.pixel_size_um)
    common = ["--patches", str(args.patches), "--patch", str(args.patch)]
    for compression in ("none", "lzf"):  # wsi.compression: the default, and lzf
        store = str(workdir / f"patches_{compression}.h5")
        in_child("extract", *common, "--", str(slide), str(annotations), store, compression)
        in_child("reads", "--reads", str(args.reads), "--", store, compression)
    seg = [
        "--target-um",
        str(args.target_um),
        "--window",
        str(args.window),
        "--max-memory-mb",
        str(args.max_memory_mb),
    ]
    in_child("segment", *seg, "--", str(slide), str(workdir))
    load_average()


if __name__ == "__main__":
    main()
