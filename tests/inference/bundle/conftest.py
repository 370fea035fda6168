"""One exported bundle per test module (exporting traces the network to TorchScript and ONNX:
seconds), with its checkpoint and phantoms."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from cohortseg.inference.bundle.export import export_bundle
from tests.conftest import make_small_plan, write_phantoms
from tests.inference.bundle.common import INFERENCE, make_checkpoint


@dataclass
class Exported:
    """A bundle exported from a small checkpoint, and what it was made from."""

    bundle: Path
    checkpoint: Path
    net: torch.nn.Module
    plan: dict
    phantoms: list[tuple[str, str, str]]
    root: Path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Exported:
    root = tmp_path_factory.mktemp("bundle")
    plan = make_small_plan()
    net = make_checkpoint(root / "best.pt", plan)
    phantoms = write_phantoms(root)
    bundle = export_bundle(root / "best.pt", root / "bundle", INFERENCE, version="1.0.0")
    return Exported(bundle, root / "best.pt", net, plan, phantoms, root)
