"""The package's layers and light contracts hold (import-linter), and no module imports another
in a circle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_module_imports_in_a_circle() -> None:
    import grimp

    graph = grimp.build_graph("cohortseg", cache_dir=None)
    modules = sorted(graph.modules)
    for module in modules:
        for other in graph.find_modules_directly_imported_by(module):
            if other.startswith("cohortseg") and graph.chain_exists(other, module):
                chain = graph.find_shortest_chain(other, module)
                raise AssertionError(f"{module} imports {other}, which imports it back: {chain}")
