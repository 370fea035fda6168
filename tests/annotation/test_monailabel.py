"""MONAI Label serves an exported cohortseg bundle: its server, really started with the
`monaibundle` app on a datastore laid out as the review package's, segments a demo image
through the REST `infer` endpoint exactly as cohortseg does.

MONAI Label lives in an environment of its own (`make install-monailabel`, about 20 minutes
and several GB the first time: see scripts/install_monailabel.sh); without it this test skips,
unless COHORTSEG_REQUIRE_MONAILABEL=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from cohortseg.core.io import load_nifti
from cohortseg.federated.deployment import free_port
from cohortseg.inference.bundle.export import export_bundle
from cohortseg.inference.shard import ShardItem, segment_items
from tests.conftest import default_config
from tests.inference.bundle.common import dice, make_checkpoint

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("COHORTSEG_MONAILABEL_VENV", REPO / ".venv-monailabel"))

pytestmark = pytest.mark.slow


def monailabel() -> Path:
    """The ``monailabel`` command of MONAI Label's own environment; skips without one."""
    command = VENV / "bin" / "monailabel"
    if not command.exists():
        if os.environ.get("COHORTSEG_REQUIRE_MONAILABEL") == "1":
            pytest.fail(f"no {command} and COHORTSEG_REQUIRE_MONAILABEL=1")
        pytest.skip(f"MONAI Label not installed in {VENV} (make install-monailabel)")
    return command


def wait_for_server(url: str, server: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"MONAI Label server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/info/", timeout=5) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(2)
    pytest.fail(f"MONAI Label server not up in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def test_monai_label_serves_the_bundle_and_segments_as_cohortseg(
    tmp_path, phantom_files, small_plan
):
    command = monailabel()
    net = make_checkpoint(tmp_path / "best.pt", small_plan)
    inference = {**default_config()["inference"], "overlap": 0.25}
    app = tmp_path / "app"
    shutil.copytree(VENV / "monailabel" / "sample-apps" / "monaibundle", app)
    export_bundle(tmp_path / "best.pt", app / "model" / "cohortseg", inference, version="1.0.0")
    datastore = tmp_path / "datastore"  # as results/review/datastore: images at the top
    datastore.mkdir()
    sid, image, _ = phantom_files[0]
    shutil.copyfile(image, datastore / f"{sid}.nii.gz")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # no PYTHONPATH: the bundle carries the cohortseg code it runs (scripts/cohortseg_portable.py)
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "MONAI_ZOO_SOURCE": "github",  # local bundles, no model-zoo look-up
    }
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [str(command), "start_server", "--app", str(app), "--studies", str(datastore),
             "--conf", "models", "cohortseg", "--conf", "sam2", "false",
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )  # fmt: skip
    try:
        wait_for_server(url, server, log, timeout_s=600)
        with urllib.request.urlopen(f"{url}/info/", timeout=30) as reply:
            info = reply.read().decode()
        assert '"cohortseg"' in info and '"organ":1' in info.replace(" ", "")
        request = urllib.request.Request(
            f"{url}/infer/cohortseg?image={sid}&output=image", method="POST"
        )
        with urllib.request.urlopen(request, timeout=600) as reply:
            (tmp_path / "served.nii.gz").write_bytes(reply.read())
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    own = ShardItem(sid, image, str(tmp_path / "own" / f"{sid}.nii.gz"))
    assert segment_items(net, small_plan, [own], inference, torch.device("cpu")) == []
    ours, our_affine = load_nifti(own.output, dtype=np.uint8)
    served, affine = load_nifti(tmp_path / "served.nii.gz", dtype=np.uint8)
    # MONAI Label writes through ITK with a float32 header: 1e-4 mm is float32's rounding
    # of coordinates of about 100 mm, with room to spare
    np.testing.assert_allclose(affine, our_affine, atol=1e-4)
    assert len(np.unique(ours)) > 1
    assert dice(served, ours) >= 0.99
