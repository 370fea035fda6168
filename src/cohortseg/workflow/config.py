"""The workflow's configuration: typing ``--config`` values to the schema, the sections each job
gets, and the configuration as the report shows it."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any

import yaml

from cohortseg.core.errors import CohortsegError
from cohortseg.core.redact import shown_config
from cohortseg.workflow.paths import PLAN


def write_shown_config(
    path: str | os.PathLike[str], config: Mapping, log_path: str | os.PathLike[str]
) -> None:
    """Write :func:`shown_config` of ``config`` to ``path`` (JSON), and say so in ``log_path``."""
    from cohortseg.core.io import write_json, write_text

    write_json(path, shown_config(config))
    write_text(log_path, f"wrote {path}\n")


def _declared_types(schema: Mapping) -> set[str]:
    """The JSON types a schema names in ``type`` (its own and its ``oneOf``/``anyOf``'s)."""
    t = schema.get("type", [])
    types = {t} if isinstance(t, str) else set(t)
    for sub in [*schema.get("oneOf", []), *schema.get("anyOf", [])]:
        types |= _declared_types(sub)
    return types


def _constrained(schema: Mapping) -> bool:
    """Whether the schema says anything about a value's type or its allowed values."""
    keys = ("type", "enum", "const", "oneOf", "anyOf")
    return any(k in schema for k in keys)


def coerce_to_schema(value: Any, schema: Mapping) -> Any:
    """Parse strings as YAML where the JSON schema expects no string.

    ``snakemake --config inference="{shard_size: 8}"`` passes nested values as strings; this
    turns ``"8"`` into ``8`` where the schema wants an integer, and leaves strings alone where
    it wants a string (a path such as ``samples: 2024.tsv`` stays a path). Mappings are
    coerced in place.
    """
    if isinstance(value, MutableMapping):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key in list(value):
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = coerce_to_schema(value[key], sub)
        return value
    if isinstance(value, list) and "items" in schema:
        return [coerce_to_schema(v, schema["items"]) for v in value]
    # a string where the schema admits no free string (only numbers, or named constants
    # such as `auto`) is YAML: "8" becomes 8, "auto" stays "auto"
    if isinstance(value, str) and _constrained(schema) and "string" not in _declared_types(schema):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return coerce_to_schema(parsed, schema) if isinstance(parsed, list | dict) else parsed
    return value


def load_yaml(path: str | os.PathLike[str]) -> dict:
    """Read a YAML file (a config or a JSON schema)."""
    with open(path) as handle:
        return yaml.safe_load(handle)


def load_schema(path: str | os.PathLike[str]) -> dict:
    """Read a YAML JSON-schema file."""
    return load_yaml(path)


#: The inference keys that training's validation reads (sliding window on the plan's grid): the
#: others (test-time augmentation, uncertainty maps, workers) only concern inference shards, so
#: changing them must not retrain the model.
TRAINING_INFERENCE_KEYS = ("overlap", "sw_batch_size")


def training_config(config: Mapping) -> dict[str, Any]:
    """The config the training job gets: the ``model`` and ``training`` sections, the
    inference keys its validation reads (:data:`TRAINING_INFERENCE_KEYS`) and, for
    ``training.backend: federated``, the ``federated`` section."""
    inference = {k: config["inference"][k] for k in TRAINING_INFERENCE_KEYS}
    out = {"model": config["model"], "training": config["training"], "inference": inference}
    if config["training"]["backend"] == "federated":
        # not federated.plan: which file holds the plan is the plan input's business
        out["federated"] = {k: v for k, v in config["federated"].items() if k != "plan"}
    return out


def plan_config(config: Mapping) -> dict[str, Any]:
    """The config the plan job gets: the ``plan``, ``model`` and ``classes`` sections and
    ``training.init_from`` as ``init_from``."""
    return {
        **{k: config[k] for k in ("plan", "model", "classes")},
        "init_from": config["training"]["init_from"],
    }


def coordinator_plan_config(defaults: Mapping, overrides: Mapping) -> dict[str, Any]:
    """:func:`plan_config` of a federation's coordinator, which has no sample sheet: the
    workflow's config as the Snakefile makes it from ``defaults`` (``config.yaml``) and
    ``overrides`` (the config file the sites run with), the ``cohort`` preset of a sheet
    under ``training.preset: auto``."""
    from cohortseg.workflow.presets import apply_preset, merged

    config = merged(defaults, overrides)
    if config.get("samples", "demo") == "demo":
        config["samples"] = "the sites' sample sheets"  # not the demo: the sheet's preset
    return plan_config(apply_preset(config, defaults))


def cohort_config(config: Mapping) -> dict[str, Any]:
    """The config sections a job needs to rebuild the cohort and its shards itself (the sample
    sheet is the one source of who is in a job): a few hundred bytes, whatever the cohort."""
    return {
        "samples": config["samples"],
        "demo": config["demo"],
        # not privacy.mapping_file: where the mapping goes changes no job's subjects
        "privacy": {k: config["privacy"][k] for k in ("pseudonymize", "key_env", "key_file")},
        "shard_size": config["shard_size"],
        "inference": {"splits": list(config["inference"]["splits"])},
        "validation": {"on_invalid": config["validation"]["on_invalid"]},
        "corrections": dict(config["corrections"]),
        # only when federated, so that other runs' shard jobs keep their params
        **({"site_shards": True} if is_federated(config) else {}),
    }


def plan_input(config: Mapping) -> str:
    """The plan that preprocessing, patches and training follow: the coordinator's plan file
    at a site of a real federation (``federated.plan``), else the plan job's :data:`PLAN`.

    Raises ``CohortsegError`` when ``federated.plan`` is set without ``training.backend:
    federated`` or names no file."""
    path = config["federated"].get("plan")
    if not path:
        return PLAN
    if not is_federated(config):
        raise CohortsegError(
            f"federated.plan ({path}) is the coordinator's plan of a federation: set"
            " training.backend: federated too"
        )
    if not os.path.isfile(path):
        raise CohortsegError(
            f"federated.plan: no file {path}; give the plan.json the coordinator sent"
            " (relative paths are from the working directory)"
        )
    return str(path)


def is_federated(config: Mapping) -> bool:
    """Whether the run trains federated (``training.backend: federated``): then the plan is
    merged from the sites' fingerprints (:mod:`cohortseg.preprocessing.site_fingerprint`) and no job
    of the coordinator opens an image to make it."""
    return config["training"]["backend"] == "federated"
