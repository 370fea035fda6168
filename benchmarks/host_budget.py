"""What the host must do per volume while the device segments: the core-seconds of each host
step of a shard job's streaming pipeline, on one volume, with the network left out.

Writes one demo phantom of ``--shape`` voxels (default 160×384×384, int16, gzip NIfTI, oblique
with permuted and flipped axes), then times with ``time.process_time`` (CPU seconds of every
thread of this process, i.e. core-seconds) the steps that :mod:`cohortseg.inference.shard` runs on
the host for it, ``--repeats`` times (the fastest counts):

- ``read``: decode the file (:func:`cohortseg.inference.shard.read_volume`: gzip, NIfTI,
reorientation
  to RAS, in the image's own dtype; the float32 cast happens on the device);
- ``to_device``: hand the voxels to the device (on a GPU a pinned-memory copy; here the CPU
  tensor the device step starts from);
- ``write``: a label map of the same shape undone to the native voxel order, encoded as gzip
  NIfTI and written atomically (:func:`cohortseg.inference.shard.write_labels`);
- ``manifest_hash``: its SHA-256 for the shard's manifest;
- ``cast_float32_on_host`` (for comparison only): what casting on the host would add.

Prints one ``name: value unit`` line per figure: each step's core-seconds, their sum per
volume and the volumes/s that ``--cores`` host cores could feed (cores / sum). The target is at
most 1.0 core-second per 160×384×384 volume, so that a 16-core node feeds 16 volumes/s.

    python benchmarks/host_budget.py
    python benchmarks/host_budget.py --shape 40 96 96 --repeats 1    # a quick look
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cohortseg.core.geometry import reorient
from cohortseg.core.io import save_nifti, sha256_file
from cohortseg.inference.shard import Prediction, ShardItem, _Segmented, read_volume, write_labels
from cohortseg.inputs.demo import demo_phantom
from cohortseg.preprocessing.prepare import Geometry

TARGET_CORE_S = 1.0


def print_figure(name: str, value: object, unit: str = "") -> None:
    print(f"{name}: {value} {unit}".rstrip(), flush=True)


def fastest(step: Callable[[], object], repeats: int) -> tuple[float, object]:
    """The smallest core-seconds of ``repeats`` runs of ``step``, and its last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        result = step()
        best = min(best, time.process_time() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 384, 384], help="voxels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, default=16, help="host cores of a GPU node")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the host steps are single-threaded per volume
    with tempfile.TemporaryDirectory(prefix="cohortseg-host-budget-") as tmp:
        image, label, affine = demo_phantom(args.shape, [0.7, 0.35, 0.35], seed=3)
        source = Path(tmp) / "image.nii.gz"
        save_nifti(source, image, affine)
        item = ShardItem("sub-1", str(source), str(Path(tmp) / "seg.nii.gz"))
        print_figure("voxels", int(np.prod(args.shape)), "voxels")
        print_figure("input_file", f"{source.stat().st_size / 2**20:.1f}", "MiB")

        read_s, canonical = fastest(lambda: read_volume(item), args.repeats)
        print_figure("read", f"{read_s:.3f}", "core-s")
        print_figure("read_dtype", canonical.data.dtype)
        copy_s, _ = fastest(lambda: torch.as_tensor(canonical.data), args.repeats)
        print_figure("to_device", f"{copy_s:.3f}", "core-s")
        cast_s, _ = fastest(lambda: canonical.data.astype(np.float32), args.repeats)
        print_figure("cast_float32_on_host", f"{cast_s:.3f}", "core-s")

        labels = np.ascontiguousarray(reorient(label, affine)[0]).astype(np.uint8)
        geometry = Geometry(
            orientation=np.asarray(canonical.orientation).tolist(),
            canonical_shape=list(labels.shape),
            resampled_shape=list(labels.shape),
            crop=[[0, n] for n in labels.shape],
            affine=np.eye(4).tolist(),
            native_shape=list(canonical.native_shape),
            native_affine=np.asarray(canonical.native_affine).tolist(),
        )
        write_s, _ = fastest(
            lambda: write_labels(_Segmented(item, Prediction(labels, geometry))), args.repeats
        )
        print_figure("write", f"{write_s:.3f}", "core-s")
        hash_s, _ = fastest(lambda: sha256_file(item.output), args.repeats)
        print_figure("manifest_hash", f"{hash_s:.3f}", "core-s")
        print_figure("output_file", f"{Path(item.output).stat().st_size / 2**20:.1f}", "MiB")

        total = read_s + copy_s + write_s + hash_s
        print_figure("host_per_volume", f"{total:.3f}", "core-s")
        print_figure(
            "host_volumes_per_s", f"{args.cores / total:.1f}", f"volumes/s on {args.cores} cores"
        )
        print_figure("target_host_per_volume", TARGET_CORE_S, "core-s")
        print_figure("within_target", str(total <= TARGET_CORE_S).lower())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
