"""Tests for cohortseg.workflow.presets: training.preset lays a named set of values over the
config."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from cohortseg.core.errors import CohortsegError
from cohortseg.workflow.config import load_schema
from cohortseg.workflow.presets import apply_preset
from tests.conftest import default_config

SCHEMA = Path(__file__).parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def test_the_demo_cohort_keeps_the_defaults_and_a_sample_sheet_gets_the_planned_network():
    config = default_config()  # samples: demo, training.preset: auto
    demo = apply_preset(config, default_config())
    assert demo["training"]["preset"] == "demo"
    assert {**demo, "training": config["training"]} == config
    assert demo["model"]["name"] == "UNet"

    sheet = apply_preset({**config, "samples": "cohort.tsv"}, default_config())
    assert sheet["training"]["preset"] == "cohort"
    assert sheet["model"]["name"] == "auto"
    assert sheet["training"]["epochs"] == config["training"]["epochs"]
    jsonschema.validate(sheet, load_schema(SCHEMA))


def test_a_preset_replaces_defaults_but_not_the_values_the_user_set():
    config = default_config()
    config["samples"] = "cohort.tsv"
    config["model"] = {**config["model"], "name": "SegResNet"}
    assert apply_preset(config, default_config())["model"]["name"] == "SegResNet"
    config["training"] = {**config["training"], "preset": "nnunet", "epochs": 300}
    out = apply_preset(config, default_config())
    assert (out["training"]["epochs"], out["training"]["steps_per_epoch"]) == (300, 250)
    assert out["model"]["name"] == "SegResNet"
    assert out["training"]["optimizer"] == "sgd"
    # the demo preset keeps every default: the small UNet on a sample sheet
    config = {**default_config(), "samples": "cohort.tsv"}
    config["training"]["preset"] = "demo"
    assert apply_preset(config, default_config())["model"]["name"] == "UNet"


def test_the_nnunet_preset_is_nnunets_trainer_and_network_and_stays_valid():
    config = default_config()
    config["training"]["preset"] = "nnunet"

    out = apply_preset(config)

    training = out["training"]
    assert (training["epochs"], training["steps_per_epoch"], training["batch_size"]) == (
        1000,
        250,
        2,
    )
    assert (training["optimizer"], training["learning_rate"]) == ("sgd", 0.01)
    assert training["augmentation"]["rotation_deg"] == 30
    assert training["seed"] == config["training"]["seed"]  # keys it does not set stay
    assert out["patches"]["foreground_fraction"] == 0.33
    assert out["model"]["name"] == "auto"
    jsonschema.validate(out, load_schema(SCHEMA))


def test_an_unknown_preset_names_the_config_key():
    config = default_config()
    config["training"]["preset"] = "fast"

    with pytest.raises(CohortsegError, match="training.preset: 'fast'"):
        apply_preset(config)
