"""singularity/cohortseg.def parses and builds what the project needs.

Parsed with spython's SingularityParser (the parser behind ``spython recipe``): header, files,
labels, environment, post, runscript and test. It maps unknown sections to comments, so the
section names are also checked against Apptainer's list here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from spython.main.parse.parsers import SingularityParser

REPO = Path(__file__).resolve().parents[1]
DEFINITION = REPO / "singularity" / "cohortseg.def"

APPTAINER_SECTIONS = {
    "setup", "files", "environment", "post", "runscript", "startscript", "test", "labels",
    "help", "arguments", "appfiles", "appenv", "appinstall", "apprun", "applabels", "apphelp",
    "apptest", "appstart",
}  # fmt: skip
REQUIRED_SECTIONS = {"help", "labels", "files", "environment", "post", "runscript", "test"}


@pytest.fixture(scope="module")
def recipe():
    parser = SingularityParser(str(DEFINITION))
    assert list(parser.recipe) == ["spython-base"], "expected a single-stage definition"
    return parser.recipe["spython-base"]


@pytest.fixture(scope="module")
def text() -> str:
    return DEFINITION.read_text()


def section_names(text: str) -> list[str]:
    return [m[1].lower() for m in re.finditer(r"^%(\w+)", text, re.MULTILINE)]


def section_lines(text: str, name: str) -> list[str]:
    """Lines of one ``%name`` section, up to the next section."""
    lines, inside = [], False
    for line in text.splitlines():
        if m := re.match(r"^%(\w+)", line):
            inside = m[1].lower() == name
        elif inside:
            lines.append(line)
    return lines


def commands(lines: list[str]) -> list[str]:
    """Shell commands with backslash continuations joined, blank and comment lines dropped."""
    joined, current = [], ""
    for raw in lines:
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
        else:
            joined.append(" ".join((current + line).split()))
            current = ""
    return joined


def labels(recipe) -> dict[str, str]:
    return dict(line.split(None, 1) for line in recipe.labels)


def test_header_is_a_docker_bootstrap_of_a_cuda_devel_image(text, recipe):
    header = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert re.fullmatch(r"Bootstrap:\s*docker", header[0].strip()), header[0]
    assert header[1].startswith("From:")
    assert re.fullmatch(
        r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-devel-ubuntu\d\d\.\d\d", recipe.fromHeader
    )


def test_sections_are_apptainer_sections_and_all_present(text, recipe):
    names = section_names(text)
    assert set(names) <= APPTAINER_SECTIONS, (
        f"unknown section(s): {set(names) - APPTAINER_SECTIONS}"
    )
    assert len(names) == len(set(names)), f"a section appears twice: {names}"
    assert REQUIRED_SECTIONS <= set(names), f"missing: {REQUIRED_SECTIONS - set(names)}"
    # What spython made of them: each required section has content.
    assert recipe.labels and recipe.environ and recipe.files and recipe.install
    assert recipe.cmd and recipe.test


def test_files_come_from_the_repository_root(recipe):
    """``apptainer build`` runs from the repository root: every source must exist there, and
    the workflow, the package and the entry points must all be in the image."""
    pairs = [line.split() for line in recipe.files]
    assert all(len(p) == 2 for p in pairs), recipe.files
    for source, _ in pairs:
        assert (REPO / source).exists(), f"%files source {source} is not in the repository"
    sources = {source for source, _ in pairs}
    assert {"pyproject.toml", "Snakefile", "config.yaml", "src", "scripts", "workflow"} <= sources
    assert all(dest.startswith("/opt/cohortseg/") for _, dest in pairs)


def test_post_builds_horovod_with_nccl_using_the_project_script(recipe):
    post = commands(recipe.install)
    builds = [c for c in post if "install_horovod.sh" in c]
    assert len(builds) == 1, builds
    words = builds[0].split()
    script = next(i for i, w in enumerate(words) if w.endswith("install_horovod.sh"))
    assert words[script] == "/opt/cohortseg/scripts/install_horovod.sh"
    assert "scripts /opt/cohortseg/scripts" in recipe.files, "%files must copy scripts/"
    # The environment assignments before the script, the interpreter after it.
    env = dict(w.split("=", 1) for w in words[:script] if "=" in w)
    assert env.get("HOROVOD_GPU_OPERATIONS") == "NCCL"
    assert words[script + 1 :] == ["/opt/venv/bin/python"]


def test_post_installs_cuda_torch_then_the_project_then_horovod(recipe):
    post = commands(recipe.install)
    torch = next(i for i, c in enumerate(post) if "torch==" in c)
    project = next(i for i, c in enumerate(post) if " install /opt/cohortseg" in c)
    horovod = next(i for i, c in enumerate(post) if "install_horovod.sh" in c)
    assert torch < project < horovod, "torch must be in place before the project and Horovod"
    # torch comes from the PyTorch index of the base image's CUDA version.
    cuda = re.match(r"nvidia/cuda:(\d+)\.(\d+)\.", recipe.fromHeader)
    assert f"download.pytorch.org/whl/cu{cuda[1]}{cuda[2]}" in post[torch]
    assert labels(recipe)["cohortseg.cuda.version"] == f"{cuda[1]}.{cuda[2]}"


def test_runscript_is_snakemake_on_the_bundled_workflow(recipe):
    assert recipe.cmd == 'exec snakemake --snakefile /opt/cohortseg/Snakefile "$@"'
    assert any(line.startswith("PATH=/opt/venv/bin:") for line in recipe.environ)


def test_test_section_checks_torch_cuda_and_horovod_nccl(text):
    checks = " ".join(commands(section_lines(text, "test")))
    assert "torch.version.cuda" in checks
    assert "hvd.nccl_built()" in checks and "hvd.gloo_built()" in checks
    assert "--dry-run" in checks
