"""Training presets (``training.preset``): named sets of config values, defined in the config's
``presets`` section, that replace the defaults (``config.yaml``'s values) before anything reads
the config; values the user set stay. ``auto`` picks ``demo`` for the demo cohort and
``cohort`` for a sample sheet."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cohortseg.core.errors import CohortsegError


def merged(base: Mapping, over: Mapping) -> dict[str, Any]:
    """``base`` with ``over``'s values, mappings merged key by key (lists replaced whole)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def over_defaults(config: Mapping, defaults: Mapping, preset: Mapping) -> dict[str, Any]:
    """``config`` with ``preset``'s values where the config still has the default's value
    (mappings key by key; a key absent from ``config`` takes the preset's)."""
    out = dict(config)
    for key, value in preset.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = over_defaults(out[key], defaults.get(key) or {}, value)
        elif key not in out or out[key] == defaults.get(key):
            out[key] = value
    return out


def preset_name(config: Mapping) -> str:
    """``training.preset``, with ``auto`` resolved: ``demo`` for ``samples: demo`` (the small
    default network and budget), ``cohort`` for a sample sheet."""
    name = str(config["training"].get("preset", "demo"))
    if name == "auto":
        return "demo" if config.get("samples", "demo") == "demo" else "cohort"
    return name


def apply_preset(config: Mapping, defaults: Mapping | None = None) -> dict[str, Any]:
    """The config with ``presets[name]`` (``name``: :func:`preset_name`) over its defaults
    (``defaults``: the values of ``config.yaml``; None: every value is replaced) and
    ``training.preset`` set to the name. ``demo``, or a preset absent from ``presets`` with
    that name: the config as it is.

    Raises
    ------
    CohortsegError
        If the preset is neither ``demo`` nor in ``presets``.
    """
    name = preset_name(config)
    presets = config.get("presets") or {}
    out = dict(config)
    out["training"] = {**config["training"], "preset": name}
    if name == "demo" and name not in presets:
        return out
    if name not in presets:
        raise CohortsegError(
            f"training.preset: {name!r} is not auto, demo nor one of presets ({', '.join(presets)})"
        )
    if defaults is None:
        return merged(out, presets[name])
    return over_defaults(out, defaults, presets[name])
