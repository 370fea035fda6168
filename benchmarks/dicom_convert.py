"""DICOM conversion time per series: what the ``convert`` rule spends per subject.

Writes one oblique demo phantom of ``--shape`` voxels (default 384×384×160: 160 sagittal
slices of 384×384, as the knee-MRI cohort stores them) as an MR series, one file per slice
(``--multi-frame``: one enhanced object), then times :func:`cohortseg.inputs.convert.convert_image`
(grouping the folder's files into series, reading every header, checking the slice geometry,
decoding pixels with highdicom, writing the gzip NIfTI) ``--repeats`` times; the fastest
counts. Also times reading the converted NIfTI as an inference job does
(:func:`cohortseg.inference.shard.read_volume`).

Prints ``name: value unit`` lines: wall and core-seconds per series, files/s, peak RSS, and
the conversion's share of a subject's time in a CPU shard job, conversion / (conversion +
``--inference-s-per-volume``): the default 12.6 s is cohortseg's measured CPU inference of one
160×384×384 volume on the 2-core machine of the README's figures. Target: share ≤ 0.25
(conversion does not dominate).

    python benchmarks/dicom_convert.py
    python benchmarks/dicom_convert.py --shape 96 96 40 --repeats 1    # a quick look
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from cohortseg.core.cohort import Subject
from cohortseg.dicom.writers import along_normal, write_series
from cohortseg.inference.shard import ShardItem, read_volume
from cohortseg.inputs.convert import convert_image
from cohortseg.inputs.demo import demo_phantom

TARGET_SHARE = 0.25


def print_figure(name: str, value: object, unit: str = "") -> None:
    print(f"{name}: {value} {unit}".rstrip(), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[384, 384, 160])
    parser.add_argument("--spacing-mm", type=float, nargs=3, default=[0.36, 0.36, 0.7])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--multi-frame", action="store_true")
    parser.add_argument("--inference-s-per-volume", type=float, default=12.6)
    args = parser.parse_args(argv)

    image, _, affine = demo_phantom(args.shape, args.spacing_mm, seed=0)
    affine, (image,) = along_normal(affine, image)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        files = write_series(folder, image, affine, multi_frame=args.multi_frame)
        subject = Subject("bench", str(folder), None, "infer")
        target = str(Path(tmp) / "image.nii.gz")
        best_wall, best_cpu = float("inf"), float("inf")
        for _ in range(args.repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            convert_image(subject, target, None, 0.1)
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        start = time.perf_counter()
        read_volume(ShardItem("bench", target, str(Path(tmp) / "seg.nii.gz")))
        read_s = time.perf_counter() - start

    share = best_wall / (best_wall + args.inference_s_per_volume)
    print_figure("series_shape", "x".join(map(str, args.shape)), "voxels")
    print_figure("files_per_series", len(files))
    print_figure("convert_wall_per_series", f"{best_wall:.3f}", "s")
    print_figure("convert_core_per_series", f"{best_cpu:.3f}", "core-s")
    print_figure("convert_files_per_s", f"{len(files) / best_wall:.0f}", "files/s")
    print_figure("read_converted_nifti", f"{read_s:.3f}", "s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print_figure("peak_rss_with_phantom_making", f"{peak:.0f}", "MiB")
    print_figure("share_of_cpu_shard_time", f"{share:.3f}", f"(target <= {TARGET_SHARE})")
    return 0 if share <= TARGET_SHARE else 1


if __name__ == "__main__":
    raise SystemExit(main())
