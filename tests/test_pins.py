"""Version pins agree across pyproject.toml, envs/*.yaml, singularity/cohortseg.def and what
exported MONAI bundles ask for.

A package pinned in more than one place must have one version everywhere, and torch must be
2.13.0 in every one of them: a rule run in a conda env, the container and a pip install must
compute with the same libraries.
"""

from __future__ import annotations

import re
import tomllib
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
ENVS = sorted((REPO / "envs").glob("*.yaml"))
DEFINITION = REPO / "singularity" / "cohortseg.def"
INSTALL_HOROVOD = REPO / "scripts" / "install_horovod.sh"
TORCH = "2.13.0"

# name[extras]==version, as in requirements, pip lines of conda envs and pip commands.
EXACT_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;,'\"]+)")
PIN_IN_TEXT = re.compile(r"(?<![\w.-])([A-Za-z][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!-]*)")
# conda match spec: name=version, name==version or "name version".
CONDA_SPEC = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==?|\s)\s*([0-9][^\s=]*)")

Pins = list[tuple[str, str]]  # (normalised package name, version), in file order


def normalise(name: str) -> str:
    """PEP 503 name: case and runs of -, _ and . do not matter (``PyYAML`` is ``pyyaml``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins_from_pyproject(path: Path) -> Pins:
    """Exact pins of ``[project] dependencies`` and every optional-dependency group."""
    project = tomllib.loads(path.read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for group in project.get("optional-dependencies", {}).values():
        requirements += group
    return [(normalise(m[1]), m[2]) for r in requirements if (m := EXACT_PIN.match(r.strip()))]


def pins_from_conda_env(path: Path) -> Pins:
    """Pins of a conda env file: conda specs with a version and exact pip requirements."""
    pins = []
    for dep in yaml.safe_load(path.read_text()).get("dependencies", []):
        if isinstance(dep, str):
            if m := CONDA_SPEC.match(dep.strip()):
                pins.append((normalise(m[1]), m[2]))
        elif isinstance(dep, dict):
            for req in dep.get("pip", []):
                if m := EXACT_PIN.match(req.strip()):
                    pins.append((normalise(m[1]), m[2]))
    return pins


def pip_requirements_of_conda_env(path: Path) -> list[str]:
    """The pip requirements of a conda env file, options and local paths left out."""
    reqs = []
    for dep in yaml.safe_load(path.read_text()).get("dependencies", []):
        if isinstance(dep, dict):
            reqs += [r.strip() for r in dep.get("pip", []) if not r.strip().startswith("-")]
    return reqs


def definition_sections(text: str) -> dict[str, list[str]]:
    """Lines of each ``%section`` of an Apptainer definition file (the header is ``header``)."""
    sections: dict[str, list[str]] = defaultdict(list)
    current = "header"
    for line in text.splitlines():
        if m := re.match(r"^%(\w+)", line):
            current = m[1].lower()
        else:
            sections[current].append(line)
    return sections


def pins_from_definition(path: Path) -> Pins:
    """Pins of the definition file: ``name==version`` in ``%post`` and ``%test``, the Python
    version it installs (``python3.X``) and its ``cohortseg.NAME.version VERSION`` labels."""
    sections = definition_sections(path.read_text())
    pins = []
    for section in ("post", "test"):
        for line in sections[section]:
            code = line.split("#", 1)[0]
            pins += [(normalise(m[1]), m[2]) for m in PIN_IN_TEXT.finditer(code)]
            pins += [("python", v) for v in re.findall(r"\bpython(3\.\d+)\b", code)]
    for line in sections["labels"]:
        if m := re.match(r"^\s*cohortseg\.([\w-]+)\.version\s+(\S+)", line):
            pins.append((normalise(m[1]), m[2]))
    return pins


def pins_from_install_horovod(path: Path) -> Pins:
    """The Horovod version scripts/install_horovod.sh builds."""
    m = re.search(r"^HOROVOD_VERSION=(\S+)", path.read_text(), re.MULTILINE)
    return [("horovod", m[1])] if m else []


def pins_of_bundles() -> Pins:
    """The versions exported MONAI bundles ask for besides the environment's own
    (cohortseg.inference.bundle.metadata: pytorch-ignite, which runs their train.json)."""
    from cohortseg.inference.bundle.metadata import PYTORCH_IGNITE_VERSION

    return [("pytorch-ignite", PYTORCH_IGNITE_VERSION)]


def disagreements(sources: dict[str, Pins]) -> dict[str, dict[str, set[str]]]:
    """Packages with more than one version across (or within) the sources: name -> version ->
    the sources pinning it to that version."""
    seen: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for source, pins in sources.items():
        for name, version in pins:
            seen[name][version].add(source)
    return {
        name: {v: set(s) for v, s in by_version.items()}
        for name, by_version in seen.items()
        if len(by_version) > 1
    }


def all_sources() -> dict[str, Pins]:
    sources = {"pyproject.toml": pins_from_pyproject(PYPROJECT)}
    for env in ENVS:
        sources[f"envs/{env.name}"] = pins_from_conda_env(env)
    sources["singularity/cohortseg.def"] = pins_from_definition(DEFINITION)
    sources["scripts/install_horovod.sh"] = pins_from_install_horovod(INSTALL_HOROVOD)
    sources["MONAI bundles (cohortseg.inference.bundle.metadata)"] = pins_of_bundles()
    return sources


def describe(problems: dict[str, dict[str, set[str]]]) -> str:
    return "\n".join(
        f"{name}: " + "; ".join(f"{v} in {', '.join(sorted(s))}" for v, s in sorted(vs.items()))
        for name, vs in sorted(problems.items())
    )


# ------------------------------------------------------------------------------------------


def test_every_source_has_pins():
    assert ENVS, "no envs/*.yaml"
    for source, pins in all_sources().items():
        assert pins, f"{source}: no version pins found (parser out of date?)"


def test_pins_agree_everywhere():
    problems = disagreements(all_sources())
    assert not problems, "version pins disagree:\n" + describe(problems)


def test_torch_is_pinned_to_the_same_version_everywhere():
    for source, pins in all_sources().items():
        if source.startswith(("scripts/", "MONAI bundles")):
            continue
        torch = [v for name, v in pins if name == "torch"]
        assert torch, f"{source} does not pin torch"
        assert set(torch) == {TORCH}, f"{source} pins torch {sorted(set(torch))}, not {TORCH}"


def test_onnx_and_onnxruntime_are_pinned_in_every_environment():
    """The bundle's model.onnx is exported and checked wherever a model version is kept."""
    for source, pins in all_sources().items():
        if source.startswith(("pyproject", "envs/cohortseg", "singularity")):
            names = {name for name, _ in pins}
            assert {"onnx", "onnxruntime"} <= names, source


def test_conda_envs_pin_every_pip_requirement_exactly():
    for env in ENVS:
        loose = [r for r in pip_requirements_of_conda_env(env) if not EXACT_PIN.match(r)]
        assert not loose, f"envs/{env.name}: not pinned with ==: {loose}"


def test_disagreements_are_found(tmp_path):
    """The checker itself: a drifted pin in an env file or the definition is reported."""
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\ndependencies = ["torch==2.13.0", "PyYAML==6.0.4"]\n'
        '[project.optional-dependencies]\ndev = ["pytest==9.2.0"]\n'
    )
    env = tmp_path / "env.yaml"
    env.write_text(
        "dependencies:\n  - python=3.11\n  - pip\n  - pip:\n"
        "      - torch==2.12.0\n      - pyyaml==6.0.4\n      - -e ..\n"
    )
    definition = tmp_path / "x.def"
    definition.write_text(
        "Bootstrap: docker\nFrom: ubuntu:22.04\n%labels\n    cohortseg.python.version 3.10\n"
        "%post\n    pip install torch==2.13.0  # comment: numpy==1.0.0 is ignored\n"
        "    python3.11 -m venv /opt/venv\n"
    )
    sources = {
        "pyproject": pins_from_pyproject(pyproject),
        "env": pins_from_conda_env(env),
        "def": pins_from_definition(definition),
    }
    assert ("pyyaml", "6.0.4") in sources["pyproject"]
    assert ("pytest", "9.2.0") in sources["pyproject"]
    assert ("numpy", "1.0.0") not in sources["def"]
    problems = disagreements(sources)
    assert set(problems) == {"torch", "python"}
    assert problems["torch"] == {"2.13.0": {"pyproject", "def"}, "2.12.0": {"env"}}
    assert problems["python"] == {"3.11": {"env", "def"}, "3.10": {"def"}}
