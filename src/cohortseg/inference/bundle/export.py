"""MONAI bundle export: a trained cohortseg model as a MONAI bundle that runs wherever MONAI
runs (no cohortseg needed), segments exactly as cohortseg's inference does, and can be
fine-tuned and evaluated:

::

    configs/metadata.json          the specification's metadata (``metadata``)
    configs/inference.json         segment a folder of NIfTI images (``configs``)
    configs/train.json             train or fine-tune on a datalist
    configs/evaluate.json          Dice on the native grid (laid over train.json)
    configs/logging.conf           what MONAI's bundle runner logs: INFO to the standard output
    models/model.pt                the network's weights (state dict)
    models/model.ts                TorchScript, with the metadata inside (``model_files``)
    models/model.onnx              ONNX
    scripts/cohortseg_portable.py  cohortseg's code that the configs use (``portable``)
    docs/README.md                 what it segments and how to run it

(modules of :mod:`cohortseg.inference.bundle`). The folder appears complete or not at all: it
is written beside its final place and renamed.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import atomic_write, write_json, write_text
from cohortseg.inference.bundle.configs import evaluate_config, inference_config, train_config
from cohortseg.inference.bundle.metadata import (
    bundle_metadata,
    metadata_problems,
    runtime_requirements,
)
from cohortseg.inference.bundle.model_files import (
    example_windows,
    export_onnx,
    export_torchscript,
    extra_json,
)
from cohortseg.inference.bundle.portable import MODULE_NAME, portable_source
from cohortseg.networks.build import build_network, read_checkpoint

log = logging.getLogger(__name__)

#: Every file of a complete bundle (:func:`is_complete`).
BUNDLE_FILES = (
    "configs/metadata.json",
    "configs/inference.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/logging.conf",
    "models/model.pt",
    "models/model.ts",
    "models/model.onnx",
    "scripts/__init__.py",
    f"scripts/{MODULE_NAME}.py",
    "docs/README.md",
)

#: ``configs/logging.conf``, which ``monai.bundle run`` reads (the Model Zoo's): INFO and above
#: to the standard output, so the loop's progress shows.
LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""

SCRIPTS_INIT = '''"""The bundle's code: cohortseg's way in, predictor and way back
(cohortseg_portable), imported as ``scripts`` with the bundle's folder on sys.path, as MONAI's
bundle runner and MONAI Label do."""
'''


def export_bundle(
    checkpoint_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    inference: Mapping,
    version: str = "0.1.0",
    description: str = "cohortseg model",
    training: Mapping | None = None,
) -> Path:
    """Write a MONAI bundle of a cohortseg checkpoint into ``out_dir`` (replacing what is there).

    Parameters
    ----------
    checkpoint_path
        A cohortseg checkpoint (``best.pt``: weights, ``model_config``, ``plan``).
    out_dir
        The bundle's folder.
    inference
        The ``inference`` config section: the predictor's ``overlap``, ``sw_batch_size`` and
        ``tta``, as the pipeline segments.
    version, description
        The bundle's version and what it is, for its metadata.
    training
        The ``training`` config section that ``train.json`` fine-tunes with (``epochs``,
        ``batch_size``, ``learning_rate``, ``weight_decay``, ``optimizer``, ``seed``);
        cohortseg's defaults if None.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    CohortsegError
        If the checkpoint cannot be read, the metadata breaks the specification or an export
        differs from the network.
    """
    checkpoint = read_checkpoint(checkpoint_path)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_bundle(staging, checkpoint, inference, version, description, training)
        publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("MONAI bundle %s (version %s)", out, version)
    return out


def write_bundle(
    out: Path,
    checkpoint: Mapping,
    inference: Mapping,
    version: str,
    description: str,
    training: Mapping | None,
) -> None:
    """Write every file of :data:`BUNDLE_FILES` for ``checkpoint`` into the folder ``out``."""
    plan = checkpoint["plan"]
    configs = {
        "inference.json": inference_config(checkpoint, inference),
        "train.json": train_config(checkpoint, inference, training),
        "evaluate.json": evaluate_config(checkpoint),
    }
    metadata = bundle_metadata(checkpoint, version, description)
    problems = metadata_problems(metadata)
    if problems:
        raise CohortsegError(
            "bundle metadata breaks the MONAI bundle specification: " + "; ".join(problems)
        )
    for name, config in configs.items():
        write_json(out / "configs" / name, config)
    write_text(out / "configs" / "logging.conf", LOGGING_CONF)
    write_text(out / "scripts" / "__init__.py", SCRIPTS_INIT)
    write_text(out / "scripts" / f"{MODULE_NAME}.py", portable_source())
    with atomic_write(out / "models" / "model.pt") as tmp:
        torch.save(checkpoint["model_state"], tmp)
    net = build_network(checkpoint["model_config"], len(plan["classes"]) + 1)
    net.load_state_dict(checkpoint["model_state"])
    net.eval()
    windows = example_windows(tuple(plan["patch_size"]))  # two: the batch axis must vary
    extras = {"inference.json": extra_json(configs["inference.json"])}
    ts = export_torchscript(net, windows, out / "models" / "model.ts", metadata, extras)
    onnx = export_onnx(net, windows, out / "models" / "model.onnx")
    metadata["exports"] = {
        "model.ts": {"max_probability_difference": ts},
        "model.onnx": onnx,
    }
    write_json(out / "configs" / "metadata.json", metadata)
    write_text(out / "docs" / "README.md", bundle_readme(plan["classes"], runtime_requirements()))


def publish(staging: Path, out: Path) -> None:
    """Put the complete folder ``staging`` at ``out``: a rename, after moving aside (then
    removing) what ``out`` held."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_complete(bundle: str | os.PathLike[str]) -> bool:
    """Whether the folder holds every file of :data:`BUNDLE_FILES` (one exported by this
    version of cohortseg; older bundles lack the portable code, train.json and the exports)."""
    return all((Path(bundle) / name).is_file() for name in BUNDLE_FILES)


def bundle_readme(classes: Sequence[str], requirements: Mapping[str, str]) -> str:
    """``docs/README.md``: what the bundle segments, what it needs and how to run it."""
    pins = " ".join(f"{name}=={v}" for name, v in requirements.items())
    return f"""# cohortseg model

3D segmentation of {", ".join(classes)} (label values 1..{len(classes)}; 0 background), trained
by cohortseg. The bundle runs without cohortseg: its preprocessing, predictor (sliding window,
test-time augmentation) and restoration to the input's grid are cohortseg's own code, copied
into `scripts/cohortseg_portable.py` when it was exported. It needs Python 3.10 or later and

    pip install {pins}

(`pytorch-ignite` only for `train.json` and `evaluate.json`).

## Segment

A folder of NIfTI images; writes `{{name}}_seg.nii.gz` per image, on the image's own grid:

    python -m monai.bundle run --config_file configs/inference.json \\
        --bundle_root . --dataset_dir /path/to/images --output_dir /path/to/segmentations

Test-time augmentation as exported (`inference#tta`); `--inference#tta none` or `mirror`
changes it.

## Fine-tune, train, evaluate

A datalist in the Medical Segmentation Decathlon's layout, `datalist.json` in `--dataset_dir`
(`{{"training": [{{"image": ..., "label": ...}}], "validation": [...]}}`, paths relative to it;
labels on their images' grids):

    python -m monai.bundle run --config_file configs/train.json \\
        --bundle_root . --dataset_dir /path/to/data --max_epochs 10

fine-tunes `models/model.pt` (`--fine_tune false`: from scratch) and keeps the best network by
validation Dice as `models/model.pt`; `models/model.ts` and `models/model.onnx` stay those of
the exported model (`python -m monai.bundle ckpt_export` makes a new TorchScript file).

    python -m monai.bundle run --config_file "['configs/train.json','configs/evaluate.json']" \\
        --bundle_root . --dataset_dir /path/to/data

writes the Dice of each validation subject on its native grid into `eval/` (foreground classes:
{", ".join(f"`class{i}` {c}" for i, c in enumerate(classes))}).

## Serve

MONAI Label's `monaibundle` app serves and trains it (the bundle folder under the app's
`model/` folder, `--conf models <bundle name>`); MONAI Deploy loads `models/model.ts`;
`models/model.onnx` runs in ONNX Runtime (input `image`: windows of the plan's patch size,
output `pred`: class scores).
"""
