"""Training presets (``training.preset``): named sets of config values, defined in the config's
``presets`` section, laid over the config before anything reads it (``demo``: none)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cohortseg.errors import CohortsegError


def merged(base: Mapping, over: Mapping) -> dict[str, Any]:
    """``base`` with ``over``'s values, mappings merged key by key (lists replaced whole)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def apply_preset(config: Mapping) -> dict[str, Any]:
    """The config with ``presets[training.preset]`` laid over it (sections and keys as in the
    config; ``training.preset: demo`` or a preset absent from ``presets`` with that name:
    the config as it is).

    Raises
    ------
    CohortsegError
        If the preset is neither ``demo`` nor in ``presets``.
    """
    name = config["training"].get("preset", "demo")
    presets = config.get("presets") or {}
    if name == "demo" and name not in presets:
        return dict(config)
    if name not in presets:
        raise CohortsegError(
            f"training.preset: {name!r} is not demo nor one of presets ({', '.join(presets)})"
        )
    return merged(config, presets[name])
