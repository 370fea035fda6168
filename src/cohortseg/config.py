"""Configuration helpers: typing ``--config`` overrides the way the schema expects."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import yaml


def _types(schema: dict) -> set[str]:
    t = schema.get("type", [])
    types = {t} if isinstance(t, str) else set(t)
    if "enum" in schema:
        types |= {type(v).__name__.replace("str", "string") for v in schema["enum"]}
    return types


def coerce_to_schema(value: Any, schema: dict) -> Any:
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
    if (
        isinstance(value, str)
        and "string" not in _types(schema)
        and (_types(schema) or "enum" in schema)
    ):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return coerce_to_schema(parsed, schema) if isinstance(parsed, list | dict) else parsed
    return value


def load_schema(path: str) -> dict:
    """Read a YAML JSON-schema file."""
    with open(path) as handle:
        return yaml.safe_load(handle)
