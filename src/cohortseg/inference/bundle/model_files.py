"""The network's other files in a bundle: ``models/model.ts`` (TorchScript, which MONAI Deploy
and MONAI Label load without the network's code) and ``models/model.onnx`` (ONNX, for ONNX
Runtime and other inference engines), each checked against the eager network before it is
written.

Both are traced on one window of the plan's patch size, the size the sliding window feeds, and
checked on a batch of two; the ONNX model takes any batch and, where the network allows
(checked on a window twice as long along its first axis), any spatial size.
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from monai.data import save_net_with_metadata

from cohortseg.core.errors import CohortsegError
from cohortseg.core.io import atomic_write

log = logging.getLogger(__name__)

#: Largest difference of class probabilities (0..1) an export may show against the eager
#: network on the same windows. float32 rounds at 2**-24 ≈ 6e-8 (relative); a backend that sums
#: a convolution's 27 × C terms or an instance norm's N voxels in another order differs by
#: about sqrt(n) roundings per layer (n = 3,456 for C = 128: 4e-6; N = 128**3: 9e-5 at most, on
#: values of order 1 after normalisation), over the network's ten or so layers; softmax moves
#: a probability by at most half the largest change of a logit. 1e-4 allows that with room,
#: and is far below any difference that would change a label except at near-ties, which the
#: segmentations. Dice (tests) covers. Measured: 2e-6 to 9e-6 (ONNX Runtime), 0 (TorchScript).
PROBABILITY_TOLERANCE = 1e-4

#: ONNX operator set: ONNX Runtime 1.30 runs up to 23; 18 has every operator MONAI's networks use.
ONNX_OPSET = 18

#: Names of the ONNX model's input and output, as in ``network_data_format``.
ONNX_INPUT, ONNX_OUTPUT = "image", "pred"


def example_windows(patch_size: tuple[int, ...], batch: int = 2, seed: int = 0) -> torch.Tensor:
    """(batch, 1, *patch_size) float32 windows of standard-normal intensities, as a z-scored
    image has, to trace and check the exports with."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, 1, *patch_size), generator=generator)


def probability_difference(logits: torch.Tensor, other: torch.Tensor) -> float:
    """Largest absolute difference between the softmax class probabilities (over dimension 1)
    of two (B, C, X, Y, Z) logit tensors."""
    a, b = torch.softmax(logits.float(), dim=1), torch.softmax(other.float(), dim=1)
    return float((a - b).abs().max())


@torch.no_grad()
def export_torchscript(
    net: torch.nn.Module,
    windows: torch.Tensor,
    path: str | os.PathLike[str],
    metadata: Mapping,
    extra_files: Mapping[str, bytes] | None = None,
) -> float:
    """Trace the eval-mode ``net`` on the first of ``windows`` ((B, 1, X, Y, Z)) and save it to
    ``path`` with the bundle's ``metadata`` (and ``extra_files``) inside, as MONAI's
    ``save_net_with_metadata`` stores them (what ``monai.bundle ckpt_export`` makes).

    Returns the largest probability difference against ``net`` on ``windows``.

    Raises
    ------
    CohortsegError
        If that difference exceeds :data:`PROBABILITY_TOLERANCE`; nothing is written then.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(net, windows[:1], check_trace=False)
    difference = probability_difference(net(windows), traced(windows))
    _check(difference, "TorchScript", path)
    buffer = io.BytesIO()
    extras = {name: bytes(data) for name, data in (extra_files or {}).items()}
    with warnings.catch_warnings():  # torch.jit.save is deprecated; MONAI Deploy loads its files
        warnings.simplefilter("ignore", DeprecationWarning)
        save_net_with_metadata(
            traced, buffer, False, meta_values=dict(metadata), more_extra_files=extras
        )
    with atomic_write(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return difference


@torch.no_grad()
def export_onnx(net: torch.nn.Module, windows: torch.Tensor, path: str | os.PathLike[str]) -> dict:
    """Export the eval-mode ``net`` to ONNX at ``path``, traced on the first of ``windows`` ((B,
    1, X, Y, Z)): with a dynamic batch and, if the model then also agrees with ``net`` on a
    window twice as long along X, dynamic spatial axes; else with the windows' spatial size.

    Returns ``{"dynamic_axes": [...], "max_probability_difference": d}``: the axes that may
    vary, by name, and ``d`` against ``net`` on ``windows`` (and the longer window).

    Raises
    ------
    CohortsegError
        If even the fixed-size model differs from ``net`` by more than
        :data:`PROBABILITY_TOLERANCE`; nothing is written then.
    """
    longer = windows[:1].repeat(1, 1, 2, 1, 1)  # a size the network takes if it takes the patch
    with atomic_write(path) as tmp:
        axes = ["batch", "x", "y", "z"]
        difference = _onnx_difference(net, windows, tmp, [windows, longer])
        if not difference <= PROBABILITY_TOLERANCE:
            log.info("ONNX: %s with dynamic spatial axes; exporting the patch size", difference)
            axes = ["batch"]
            difference = _onnx_difference(net, windows, tmp, [windows])
        _check(difference, "ONNX", path)
    return {"dynamic_axes": axes, "max_probability_difference": difference}


def _onnx_difference(
    net: torch.nn.Module, windows: torch.Tensor, path: Path, checks: list[torch.Tensor]
) -> float:
    """Export ``net`` to ``path``, traced on the first of ``windows`` (dynamic spatial axes if
    ``checks`` hold another spatial shape), and return its largest probability difference
    against ``net`` on ``checks`` (infinite if the export or ONNX Runtime fails)."""
    spatial = any(x.shape[2:] != windows.shape[2:] for x in checks)
    try:
        _trace_onnx(net, windows[:1], path, spatial)
        session = onnx_session(path)
        return max(probability_difference(net(x), _run(session, x)) for x in checks)
    except Exception as exc:  # a network the exporter or ONNX Runtime cannot take this way
        log.info("ONNX export (dynamic spatial axes: %s) fails: %s", spatial, exc)
        return float("inf")


def _trace_onnx(net: torch.nn.Module, windows: torch.Tensor, path: Path, spatial: bool) -> None:
    """``torch.onnx.export`` with TorchScript tracing (the exporter that needs no onnxscript
    and takes about a quarter of the torch.export-based one's time on these networks)."""
    dims = {0: "batch", 2: "x", 3: "y", 4: "z"} if spatial else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*instance_norm.*train=True.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(
            net,
            (windows,),
            str(path),
            dynamo=False,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_axes={ONNX_INPUT: dims, ONNX_OUTPUT: dims},
            opset_version=ONNX_OPSET,
        )


def onnx_session(path: str | os.PathLike[str], threads: int | None = None):
    """An ONNX Runtime session of the model at ``path`` on the CPU (``threads`` intra-op
    threads; None: torch's)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, windows: torch.Tensor) -> torch.Tensor:
    (out,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: windows.cpu().numpy().astype(np.float32)})
    return torch.from_numpy(out)


class OnnxNetwork(torch.nn.Module):
    """An ONNX model as a torch module on the CPU (ONNX Runtime), so that the predictor can run
    it: ``forward`` takes (B, 1, X, Y, Z) float32 windows and returns (B, C, X, Y, Z) logits."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        super().__init__()
        self.session = onnx_session(path, threads)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return _run(self.session, windows).to(windows.device)


def _check(difference: float, kind: str, path: str | os.PathLike[str]) -> None:
    if not difference <= PROBABILITY_TOLERANCE:
        raise CohortsegError(
            f"{kind} export {path}: class probabilities differ from the network's by "
            f"{difference:.3g} (> {PROBABILITY_TOLERANCE:g}); the network may not be traceable"
        )


def extra_json(obj: object) -> bytes:
    """``obj`` as JSON bytes, for a TorchScript file's extra files."""
    return json.dumps(obj, indent=2).encode()
