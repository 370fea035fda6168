"""A NIfTI header fuzzer: broken files must be named problems, never crashes.

Mutates the headers of three valid NIfTI files (int16 from cohortseg's own writer, big-endian
float32 with a qform only, scaled uint8 with an sform only) ``--n`` times with ``--seed``: 1 to
3 mutations per file from dims, pixdim, datatype, bitpix, vox_offset, qform/sform codes and
values, quaternion parameters, scl_slope/scl_inter, intent, magic, sizeof_hdr, the header's
byte order, any one byte of the header, the extension flag, truncated data and gzip or not (or
a name that says the opposite). Each file is
validated (:func:`cohortseg.inputs.validate.validate_subject`, the configured limits), and one
that validation accepts goes through the host path of inference
(:func:`cohortseg.inference.shard.read_volume`, ``segment_canonical``: preparation, a tiny
network, restoration; ``write_labels``), in a worker process that is replaced after a crash.

A case is a crash when anything but a named problem comes out: an exception other than
``CohortsegError``'s family from validation, an exception from segmenting or writing an image
that validation and reading accepted, a worker that dies or takes more than ``--timeout-s``, or
a segmentation whose shape or affine is not the image's (as nibabel reads it). A refusal by
``InvalidInputError`` after validation accepted the file is named, but late: counted apart.

Prints ``name: value unit`` lines; crashing files and their tracebacks go to ``--keep``.

    python benchmarks/fuzz_headers.py --n 1000 --seed 0
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SHAPE = (12, 10, 8)
PLAN = {
    "target_spacing_mm": [2.0, 2.0, 2.0],
    "patch_size": [16, 16, 16],
    "normalization": "zscore",
    "crop": True,
    "crop_margin": 2,
    "classes": ["organ", "shell", "tube"],
}
MODEL = {"name": "UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


def print_figure(name: str, value: object, unit: str = "") -> None:
    print(f"{name}: {value} {unit}".rstrip(), flush=True)


# --------------------------------------------------------------------------------------------
# the valid files mutated


def _oblique() -> np.ndarray:
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    affine = np.eye(4)
    affine[:3, :3] = np.array([[0, -c, s], [0, s, c], [-1, 0, 0]]) @ np.diag([1.5, 2.0, 3.0])
    affine[:3, 3] = [30.0, -20.0, 15.0]
    return affine


def base_files(directory: Path) -> list[tuple[nib.Nifti1Header, bytes]]:
    """Three valid files as (header, voxel bytes): the headers nibabel wrote (check=False
    copies, mutated freely), the voxels in the header's byte order."""
    from cohortseg.core.io import save_nifti
    from cohortseg.inputs.demo import demo_phantom

    image = demo_phantom(list(SHAPE), [1.5, 2.0, 3.0], seed=1)[0]
    save_nifti(directory / "int16.nii", image.astype(np.int16), _oblique())
    bases = []
    raw = (directory / "int16.nii").read_bytes()
    header = nib.Nifti1Header(raw[:348], check=False)
    bases.append((header, raw[int(header["vox_offset"]) :]))

    big = nib.Nifti1Header(endianness=">")
    big.set_data_dtype(np.float32)
    big.set_data_shape(SHAPE)
    big.set_qform(_oblique(), code=1)
    bases.append((big, image.astype(">f4").tobytes(order="F")))

    scaled = nib.Nifti1Header()
    scaled.set_data_dtype(np.uint8)
    scaled.set_data_shape(SHAPE)
    scaled.set_zooms((1.5, 2.0, 3.0))
    scaled.set_sform(_oblique(), code=2)
    scaled["scl_slope"], scaled["scl_inter"] = 4.0, -100.0
    levels = np.clip((image - image.min()) / np.ptp(image) * 255, 0, 255).astype(np.uint8)
    bases.append((scaled, levels.tobytes(order="F")))
    for header, _ in bases:
        header["vox_offset"] = 352
    return bases


# --------------------------------------------------------------------------------------------
# mutations: each changes one thing of a header (a numpy structured scalar, no checks)

Mutation = Callable[[nib.Nifti1Header, np.random.Generator, dict], None]
ODD_FLOATS = [0.0, -1.0, np.nan, np.inf, -np.inf, 1e-30, 1e30, 1e-3, 5.0, -7.5, 3.4e38]


def _pick(rng: np.random.Generator, values: list) -> object:
    return values[int(rng.integers(len(values)))]


def m_dim(h, rng, case):
    k = int(rng.integers(0, 8))
    old = int(h["dim"][k])
    h["dim"][k] = _pick(
        rng, [-1, 0, 1, 2, 3, 4, 5, 7, 8, 100, 2049, 32767, -32768, old + 1, 2 * old]
    )


def m_pixdim(h, rng, case):
    h["pixdim"][int(rng.integers(0, 8))] = _pick(rng, [*ODD_FLOATS, float(rng.normal(2, 3))])


def m_datatype(h, rng, case):
    codes = [0, 1, 2, 3, 4, 8, 16, 32, 64, 128, 255, 256, 512, 768, 1024, 1280, 1536, 1792]
    h["datatype"] = _pick(rng, [*codes, 2048, 2304, 9999, -1])


def m_bitpix(h, rng, case):
    h["bitpix"] = _pick(rng, [0, 1, 7, 8, 16, 24, 32, 64, 128, -8])


def m_vox_offset(h, rng, case):
    values = [0, 1, 100, 348, 351, 352.5, 353, 356, 368, 1e6, -352, np.nan, np.inf, 3.5e38]
    h["vox_offset"] = _pick(rng, values)


def m_xform_code(h, rng, case):
    field = _pick(rng, ["qform_code", "sform_code"])
    h[field] = _pick(rng, [-1, 0, 1, 2, 3, 4, 5, 6, 127, -32768])


def m_quatern(h, rng, case):
    field = _pick(rng, ["quatern_b", "quatern_c", "quatern_d"])
    h[field] = _pick(rng, [float(rng.uniform(-1.5, 1.5)), np.nan, 1.0, -1.0, 0.0])


def m_qoffset(h, rng, case):
    field = _pick(rng, ["qoffset_x", "qoffset_y", "qoffset_z"])
    h[field] = _pick(rng, [np.nan, np.inf, 1e38, -1e38, float(rng.normal(0, 100))])


def m_srow(h, rng, case):
    field = _pick(rng, ["srow_x", "srow_y", "srow_z"])
    k = int(rng.integers(0, 4))
    h[field][k] = _pick(rng, [*ODD_FLOATS, float(rng.normal(0, 3))])
    if rng.random() < 0.2:
        h[field][:3] = 0.0  # a singular sform


def m_scaling(h, rng, case):
    field = _pick(rng, ["scl_slope", "scl_inter"])
    h[field] = _pick(rng, [0.0, np.nan, np.inf, -np.inf, 1e38, -1e38, 1e-38, -2.0, 0.5, 1e20])


def m_intent(h, rng, case):
    h["intent_code"] = _pick(rng, [-1, 0, 2, 1002, 1007, 2001, 32767])
    h["intent_p1"] = _pick(rng, [np.nan, np.inf, 0.0, 1e30])


def m_magic(h, rng, case):
    h["magic"] = _pick(rng, [b"ni1", b"n+2", b"", b"abc", b"n+1\x01"])


def m_sizeof_hdr(h, rng, case):
    h["sizeof_hdr"] = _pick(rng, [0, 347, 349, 540, 1543569408])  # the last: 348 byte-swapped


def m_byte_order(h, rng, case):
    case["swap_header"] = True  # the header in the other byte order, the voxels as they were


def m_truncate(h, rng, case):
    case["keep_fraction"] = float(rng.choice([0.0, rng.random(), 0.999]))


def m_compression(h, rng, case):
    case["gzip"] = not case["gzip"]  # the content disagrees with the name


def m_dim_4d(h, rng, case):
    h["dim"][0] = 4
    h["dim"][4] = _pick(rng, [1, 2, 0])


def m_extension_flag(h, rng, case):
    case["extension"] = bytes([1, 0, 0, 0])  # extensions claimed: the voxels read as one


def m_random_byte(h, rng, case):
    case["flip_byte"] = (int(rng.integers(0, 348)), int(rng.integers(0, 256)))


MUTATIONS: list[Mutation] = [
    m_dim,
    m_pixdim,
    m_datatype,
    m_bitpix,
    m_vox_offset,
    m_xform_code,
    m_quatern,
    m_qoffset,
    m_srow,
    m_scaling,
    m_intent,
    m_magic,
    m_sizeof_hdr,
    m_byte_order,
    m_truncate,
    m_compression,
    m_dim_4d,
    m_extension_flag,
    m_random_byte,
]


def make_case(index: int, seed: int, bases: list, directory: Path) -> tuple[Path, list[str]]:
    """Write case ``index``: a base file's header with 1 to 3 mutations; returns its path and
    the mutations' names."""
    rng = np.random.default_rng([seed, index])
    header, voxels = bases[int(rng.integers(len(bases)))]
    header = header.copy()
    gzipped = bool(rng.random() < 0.5)
    case = {"gzip": gzipped, "swap_header": False, "keep_fraction": 1.0, "extension": bytes(4)}
    chosen = [MUTATIONS[int(k)] for k in rng.integers(len(MUTATIONS), size=rng.integers(1, 4))]
    with np.errstate(over="ignore"):  # 3.5e38 into a float32 field is meant
        for mutation in chosen:
            mutation(header, rng, case)
    if case["swap_header"]:
        header = header.as_byteswapped()
    voxels = voxels[: int(len(voxels) * case["keep_fraction"])]
    block = bytearray(header.binaryblock)
    if "flip_byte" in case:
        offset, value = case["flip_byte"]
        block[offset] = value
    raw = bytes(block) + case["extension"] + voxels
    path = directory / f"case_{index:05d}.nii{'.gz' if gzipped else ''}"
    path.write_bytes(gzip.compress(raw, mtime=0) if case["gzip"] else raw)
    return path, [m.__name__.removeprefix("m_") for m in chosen]


# --------------------------------------------------------------------------------------------
# one case in the worker


def _setup() -> tuple:
    import torch

    from cohortseg.networks.build import build_network

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    net = build_network(MODEL, len(PLAN["classes"]) + 1).eval()
    inference = {**config["inference"], "device": "cpu"}
    return net, inference, config["validation"]


def run_case(path: Path, net, inference: dict, validation: dict, out: Path) -> tuple[str, str]:
    """(outcome, detail): ``refused`` (validation named a problem), ``segmented``, ``late``
    (InvalidInputError after validation accepted), or ``crash`` with the traceback."""
    import torch

    from cohortseg.core.cohort import Subject
    from cohortseg.core.errors import CohortsegError
    from cohortseg.inference.shard import (
        ShardItem,
        _Segmented,
        read_volume,
        segment_canonical,
        write_labels,
    )
    from cohortseg.inputs.validate import Problem, validate_subject

    subject = path.name.split(".")[0]
    try:
        problems = validate_subject(
            Subject(subject, str(path), None, "infer"),
            4,
            int(validation["max_dim"]),
            float(validation["affine_tolerance_mm"]),
        )
    except CohortsegError as exc:
        return "refused", str(exc)
    except Exception:
        return "crash", "validation: " + traceback.format_exc()
    if problems:
        named = all(isinstance(p, Problem) and p.subject == subject and p.problem for p in problems)
        return ("refused", str(problems[0])) if named else ("crash", f"unnamed: {problems}")
    item = ShardItem(subject, str(path), str(out / f"{subject}_seg.nii.gz"))
    try:
        image = read_volume(item)
    except CohortsegError as exc:
        return "late", str(exc)
    except Exception:
        return "crash", "read_volume: " + traceback.format_exc()
    try:
        prediction = segment_canonical(net, image, PLAN, inference, torch.device("cpu"))
        write_labels(_Segmented(item, prediction))
    except Exception:
        return "crash", "segment/write: " + traceback.format_exc()
    return _check_geometry(path, Path(item.output))


def _check_geometry(image: Path, segmentation: Path) -> tuple[str, str]:
    """The segmentation has the image's shape and affine, as nibabel reads the image."""
    source, seg = nib.load(str(image)), nib.load(str(segmentation))
    segmentation.unlink()
    shape = source.shape[:3]
    if seg.shape != shape or seg.get_data_dtype() != np.uint8:
        return "crash", f"segmentation shape {seg.shape} ({seg.get_data_dtype()}), image {shape}"
    if not np.allclose(seg.affine, source.affine, rtol=1e-5, atol=1e-4):
        return "crash", f"segmentation affine\n{seg.affine}\nimage affine\n{source.affine}"
    return "segmented", ""


def worker(connection, out: str) -> None:
    """Answer paths sent over ``connection`` with (outcome, detail) until it sends None."""
    import logging

    logging.disable(logging.CRITICAL)  # validation's warnings: the fuzzer counts, not reads
    net, inference, validation = _setup()
    connection.send("ready")
    while (path := connection.recv()) is not None:
        connection.send(run_case(Path(path), net, inference, validation, Path(out)))


class Worker:
    """A worker process, replaced when it crashes or hangs."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=worker, args=(child, str(self.out)), daemon=True)
        self.process.start()
        if not self.connection.poll(600) or self.connection.recv() != "ready":
            raise RuntimeError("the fuzzer's worker did not start")

    def run(self, path: Path, timeout_s: float) -> tuple[str, str]:
        self.connection.send(str(path))
        try:
            if self.connection.poll(timeout_s):
                return self.connection.recv()
            detail = f"no answer within {timeout_s:g} s"
        except EOFError:
            detail = "the worker died"
        exitcode = self._restart()
        return "crash", f"{detail} (exit code {exitcode})"

    def _restart(self) -> int | None:
        self.process.kill()
        self.process.join()
        exitcode = self.process.exitcode
        self._start()
        return exitcode

    def close(self) -> None:
        self.connection.send(None)
        self.process.join(60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="files to try")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=120.0, help="per file: a hang")
    parser.add_argument("--keep", type=Path, help="folder for crashing files and tracebacks")
    parser.add_argument("--table", type=Path, help="TSV of every case: outcome, mutations, why")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    outcomes: Counter[str] = Counter()
    rows = ["file\toutcome\tmutations\tdetail"]
    with tempfile.TemporaryDirectory(prefix="cohortseg-fuzz-") as tmp:
        directory = Path(tmp)
        bases = base_files(directory)
        runner = Worker(directory)
        for index in range(args.n):
            path, mutations = make_case(index, args.seed, bases, directory)
            outcome, detail = runner.run(path, args.timeout_s)
            outcomes[outcome] += 1
            why = detail.split(": ", 2)[-1].splitlines()[0] if detail else ""
            rows.append(f"{path.name}\t{outcome}\t{','.join(mutations)}\t{why}")
            if outcome in ("crash", "late"):
                print(f"{outcome} {path.name} ({', '.join(mutations)}):\n{detail}", file=sys.stderr)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, args.keep / path.name)
                    (args.keep / f"{path.name}.txt").write_text(f"{mutations}\n{detail}\n")
            path.unlink()
        runner.close()
    if args.table:
        args.table.write_text("\n".join(rows) + "\n")
    print_figure("fuzz_cases", args.n, "files")
    print_figure("fuzz_refused_by_validation", outcomes["refused"], "files")
    print_figure("fuzz_segmented", outcomes["segmented"], "files")
    print_figure("fuzz_refused_after_validation", outcomes["late"], "files")
    print_figure("fuzz_crashes", outcomes["crash"], "files")
    print_figure("fuzz_seconds", f"{time.perf_counter() - start:.1f}", "s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
